package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/ipam"
	"github.com/vxbridge/vxbridge/namespace"
	"github.com/vxbridge/vxbridge/peers"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/store"
	"github.com/vxbridge/vxbridge/vxlan"
)

// crossHostFlags are the serve flags of cross-host networks. Without
// --etcd-endpoints none of them matters and vxbridge is single-host.
type crossHostFlags struct {
	etcdFlags
	vtepInterface string
	vtepIP        string
	vtepCIDR      string
	vxlanPort     int
	hostTTL       time.Duration
	programming   string
	namesPort     int
}

func (f *crossHostFlags) register(fs *flag.FlagSet) {
	f.etcdFlags.register(fs, "etcd client URLs, comma-separated; turns on cross-host networks (-o vxlan.id)",
		"", "etcd user of this host (with --etcd-password-file; https only): see vxbridge cluster add-host")
	fs.StringVar(&f.vtepInterface, "vtep-interface", "", "underlay interface for VXLAN (default: the interface of the default route)")
	fs.StringVar(&f.vtepIP, "vtep-ip", "", "this host's VXLAN tunnel address (default: the address of --vtep-interface)")
	fs.StringVar(&f.vtepCIDR, "vtep-cidr", "", "the underlay's prefixes, comma-separated: peers whose VTEP lies outside are refused (empty: any unicast address)")
	fs.IntVar(&f.vxlanPort, "vxlan-port", vxlan.DefaultPort, "VXLAN UDP port, the same on every host")
	fs.DurationVar(&f.hostTTL, "host-ttl", cluster.DefaultTTL, "how long a silent host keeps its endpoints in etcd (its lease TTL)")
	fs.StringVar(&f.programming, "peer-programming", status.ProgrammingEager, "eager (every peer's VXLAN entries at once) or on-demand (only peers talked to, on the kernel's miss notifications; see BENCHMARKS.md figure 6)")
	fs.IntVar(&f.namesPort, "names-port", 5335, "port of the DNS server answering cross-host networks' containers for the names of other hosts' containers (0: off)")
}

func (f *crossHostFlags) validate() error {
	if f.endpoints == "" {
		return nil
	}
	if f.vxlanPort < 1 || f.vxlanPort > 65535 {
		return fmt.Errorf("--vxlan-port %d: want 1-65535", f.vxlanPort)
	}
	if f.programming != status.ProgrammingEager && f.programming != status.ProgrammingOnDemand {
		return fmt.Errorf("--peer-programming %q: want eager or on-demand", f.programming)
	}
	if f.hostTTL < 2*time.Second {
		return fmt.Errorf("--host-ttl %s: want at least 2s (etcd leases count whole seconds)", f.hostTTL)
	}
	if f.namesPort < 0 || f.namesPort > 65535 {
		return fmt.Errorf("--names-port %d: want 1-65535, or 0 to answer no names", f.namesPort)
	}
	if _, err := parsePrefixes("--vtep-cidr", f.vtepCIDR); err != nil {
		return err
	}
	return f.etcdFlags.validate()
}

// parsePrefixes reads a comma-separated list of prefixes (empty: none).
func parsePrefixes(flag, s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%s %q: want prefixes like 10.0.0.0/16, comma-separated: %w", flag, s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// crossHost is the running cross-host part of serve; its zero value (no
// etcd) changes nothing.
type crossHost struct {
	client *cluster.Client
	blocks *ipam.BlockAllocators
	peers  *peers.Manager
	cfg    *driver.CrossHostConfig
	names  *crossHostNames // nil with --names-port=0
	addrs  *hostAddresses
}

// startCrossHost connects to etcd (without waiting for it) and resolves the
// VTEP. db is the store, for the host id and the cross-host pools; fw gets
// the VXLAN port rule, open to the peers' VTEPs.
func startCrossHost(f *crossHostFlags, stateDir string, db *store.DB, fw *firewall.Firewall, sandboxes *namespace.MountNS,
	log *slog.Logger) (*crossHost, error) {
	if f.endpoints == "" {
		return &crossHost{}, nil
	}
	if err := f.validate(); err != nil {
		return nil, err
	}
	tlsCfg, password, err := f.connection()
	if err != nil {
		return nil, err
	}
	vtepCIDRs, _ := parsePrefixes("--vtep-cidr", f.vtepCIDR) // validated
	hostID, err := cluster.LoadHostID(stateDir)
	if err != nil {
		return nil, err
	}
	if err := checkHostUser(f.username, hostID, stateDir); err != nil {
		return nil, err
	}
	vx := vxlan.New(vxlan.Options{Logger: log})
	vtep, err := vx.ResolveVTEP(f.vtepInterface, f.vtepIP)
	if err != nil {
		return nil, err
	}
	if len(vtepCIDRs) > 0 && !slices.ContainsFunc(vtepCIDRs, func(p netip.Prefix) bool { return p.Contains(vtep.Addr) }) {
		return nil, fmt.Errorf("this host's VTEP %s (of %s) is outside --vtep-cidr %s: peers would refuse it; set --vtep-ip or --vtep-interface, or widen --vtep-cidr",
			vtep.Addr, vtep.Interface, f.vtepCIDR)
	}
	client, err := cluster.New(cluster.Config{
		Endpoints: f.endpointList(), TLS: tlsCfg, Prefix: f.prefix, Username: f.username, Password: password,
		HostID: hostID, HostIDFile: filepath.Join(stateDir, cluster.HostIDFile), TTL: f.hostTTL, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	client.SetHost(cluster.Host{VTEP: vtep.Addr, Port: f.vxlanPort})
	blocks := ipam.NewBlockAllocators(ipam.BlockConfig{Store: db, Leaser: client, CrossHost: ipam.CrossHostPool(db.Networks), Logger: log})
	onDemand := f.programming == status.ProgrammingOnDemand
	pm := peers.New(peersConfig(f, hostID, vtep.Addr, vtepCIDRs, client, vx, fw, log))
	log.Info("cross-host networks on", "host_id", hostID, "vtep", vtep.Addr, "vtep_interface", vtep.Interface,
		"underlay_mtu", vtep.MTU, "vxlan_port", f.vxlanPort, "peer_programming", f.programming, "etcd", f.endpoints,
		"etcd_user", f.username, "tls", tlsCfg != nil, "host_ttl", f.hostTTL)
	x := &crossHost{client: client, blocks: blocks, peers: pm, cfg: &driver.CrossHostConfig{
		Cluster: client, VXLAN: vx, Blocks: blocks, Peers: pm,
		VTEP: vtep.Addr, VTEPInterface: vtep.Interface, UnderlayMTU: vtep.MTU, Port: f.vxlanPort, OnDemand: onDemand,
		EtcdEndpoints: strings.Split(f.endpoints, ","),
	}}
	if x.names, err = startNames(f.namesPort, pm, sandboxes, log); err != nil {
		client.Close()
		return nil, err
	}
	if x.names != nil {
		x.cfg.Names, x.cfg.NamesPort = x.names.learner, f.namesPort
	}
	x.addrs = &hostAddresses{db: db}
	x.cfg.HostAddrs = x.addrs
	return x, nil
}

// peersConfig is the peers manager's configuration: on-demand programming
// raises the neighbour-table limits (eager entries are permanent: the kernel
// does not count them, vxlan/ design notes), and every change of the
// members' VTEPs reaches the VXLAN port's rule.
func peersConfig(f *crossHostFlags, hostID string, vtep netip.Addr, vtepCIDRs []netip.Prefix, client *cluster.Client,
	vx *vxlan.Manager, fw *firewall.Firewall, log *slog.Logger) peers.Config {
	pc := peers.Config{Self: hostID, SelfVTEP: vtep, VTEPCIDRs: vtepCIDRs, Source: client, Logger: log,
		OnDemand: f.programming == status.ProgrammingOnDemand,
		OnVTEPs:  func(vteps []netip.Addr, following bool) { guardVXLANPort(fw, f.vxlanPort, following, vteps, log) }}
	if pc.OnDemand {
		pc.NeighLimits = func(total int) {
			if _, _, err := vx.EnsureNeighLimits(total); err != nil {
				log.Warn("cross-host: neighbour-table limits", "err", err)
			}
		}
	}
	return pc
}

// guardVXLANPort opens the VXLAN port to the peers' VTEPs only; with no
// cross-host network left (following false) no VXLAN device listens, and
// the rule and sets go, so the firewall is left as before the first
// network.
func guardVXLANPort(fw *firewall.Firewall, port int, following bool, vteps []netip.Addr, log *slog.Logger) {
	if !following {
		port = 0
	}
	if err := fw.SetVXLANGuard(firewall.VXLANGuard{Port: port, VTEPs: vteps}); err != nil {
		log.Error("cross-host: the VXLAN port rule is not in place: frames from any source may reach the cross-host networks; the reconciler retries",
			"port", port, "err", err)
		return
	}
	if port == 0 {
		log.Info("no cross-host network left: VXLAN port rule removed")
		return
	}
	log.Info("VXLAN port open to the peers' VTEPs only", "port", port, "vteps", len(vteps))
}

// allocator is the IPAM's allocator factory: nil (local) without etcd.
func (x *crossHost) allocator() ipam.AllocatorFactory {
	if x.blocks == nil {
		return nil
	}
	return x.blocks.Factory
}

// ipamReady hands the IPAM to what takes addresses from it.
func (x *crossHost) ipamReady(ip *ipam.Driver) {
	if x.addrs != nil {
		x.addrs.setIPAM(ip)
	}
}

// driverConfig is nil without etcd.
func (x *crossHost) driverConfig() *driver.CrossHostConfig { return x.cfg }

// run keeps the host lease and this host's records in etcd, and follows
// the host records (for hosts of an older version), until ctx ends. Each
// network's records are followed from the driver's Attach (package peers).
func (x *crossHost) run(ctx context.Context) {
	if x.client == nil {
		return
	}
	go x.client.Run(ctx)
	go x.client.FollowHosts(ctx)
	if x.names != nil {
		go x.names.server.Serve(ctx)
	}
}

func (x *crossHost) close() {
	if x.client != nil {
		x.names.close()
		x.peers.Close()
		x.client.Close()
	}
}

// clusterStatus is the driver's cross-host status with the DNS server's
// counts.
func (x *crossHost) clusterStatus(drv *driver.Driver) func() (*status.Cluster, error) {
	return func() (*status.Cluster, error) {
		c, err := drv.ClusterStatus()
		if c != nil && x.names != nil {
			st := x.names.server.Stats()
			c.DNS = &status.DNSStats{Port: x.names.port, Answered: st.Answered, Forwarded: st.Forwarded, Failed: st.Failed, Dropped: st.Dropped}
		}
		return c, err
	}
}
