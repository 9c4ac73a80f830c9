package driver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/store"
	"github.com/vxbridge/vxbridge/vxlan"
)

// Cross-host networks. A network created with -o vxlan.id=N is one L2
// segment over every host that creates it with the same VNI and subnet: its
// bridge gets a VXLAN device as a port, and the device's FDB and neighbour
// entries point at the endpoints of the other hosts, as the etcd watch
// reports them. The hooks below are called from the single-host lifecycle
// (driver.go, endpoint.go, reconcile.go) and do nothing for local networks.
//
// etcd is waited for only by CreateNetwork of a cross-host network (the
// cluster-wide consistency check), and outside d.mu, so calls for other
// networks go on meanwhile. Endpoints are published in the background;
// container start never waits for etcd.

const aliasVXLANPrefix = AliasPrefix + "vxlan:"

func vxlanAlias(id string) string { return aliasVXLANPrefix + id }

// claimTimeout bounds the etcd check of a cross-host CreateNetwork.
const claimTimeout = 10 * time.Second

type crossHost struct {
	cfg CrossHostConfig

	mu       sync.Mutex // guards view and haveView
	view     cluster.View
	haveView bool

	syncMu sync.Mutex // one table sync at a time
}

func newCrossHost(cfg *CrossHostConfig) *crossHost {
	if cfg == nil {
		return nil
	}
	return &crossHost{cfg: *cfg}
}

// The components of the cross-host configuration; only when d.xh != nil.
func (d *Driver) cluster() Cluster      { return d.xh.cfg.Cluster }
func (d *Driver) blocks() AddressBlocks { return d.xh.cfg.Blocks }
func (d *Driver) hostVXLAN() VXLAN      { return d.xh.cfg.VXLAN }

// connectivityScope is "global" when cross-host networks are configured:
// docker then knows a network of this driver may span hosts. Scope stays
// "local": every host creates the network itself, no swarm involved.
func (d *Driver) connectivityScope() string {
	if d.xh != nil {
		return network.GlobalScope
	}
	return network.LocalScope
}

func parseVNI(key, val string) (uint32, error) {
	v, err := strconv.ParseUint(val, 10, 32)
	if err != nil || !vxlan.ValidVNI(v) {
		return 0, invalidf("option %s=%q: want a VXLAN network identifier from 1 to %d", key, val, vxlan.MaxVNI)
	}
	return uint32(v), nil
}

// claimCrossHost checks a cross-host network before anything is built: etcd
// configured, addresses from vxbridge's IPAM, an MTU that fits the underlay,
// and the cluster's agreement on its VNI and subnets. It runs without d.mu.
func (d *Driver) claimCrossHost(n *store.Network) error {
	if n.VNI == 0 {
		return nil
	}
	if d.xh == nil {
		return invalidf("option %s=%d makes a cross-host network, which needs etcd: start vxbridge serve with --etcd-endpoints", OptVXLANID, n.VNI)
	}
	cfg := &d.xh.cfg
	if err := d.checkLocalVNI(n); err != nil {
		return err
	}
	if len(n.IPv4) == 0 && len(n.IPv6) == 0 {
		return invalidf("a cross-host network (-o %s) needs a subnet", OptVXLANID)
	}
	for _, s := range n.Subnets() {
		if !cfg.Blocks.Holds(s.Pool) {
			return invalidf("a cross-host network (-o %s=%d) needs addresses that are unique across hosts, from vxbridge's IPAM: subnet %s came from another IPAM driver; create the network with --ipam-driver vxbridge",
				OptVXLANID, n.VNI, s.Pool)
		}
	}
	mtu := vxlan.MTU(cfg.UnderlayMTU, n.MTU)
	if n.MTU > mtu {
		d.log.Warn("mtu lowered to fit the vxlan encapsulation", "network", short(n.ID), "asked", n.MTU, "mtu", mtu,
			"underlay", cfg.VTEPInterface, "underlay_mtu", cfg.UnderlayMTU)
	}
	n.MTU = mtu
	if len(n.IPv6) > 0 && n.MTU < minMTUIPv6 {
		return invalidf("cross-host IPv6 network: mtu %d (underlay %s mtu %d minus %d for VXLAN) is below %d",
			n.MTU, cfg.VTEPInterface, cfg.UnderlayMTU, vxlan.Overhead, minMTUIPv6)
	}
	cn := cluster.Network{VNI: n.VNI}
	for _, s := range n.Subnets() {
		cn.Subnets = append(cn.Subnets, s.Pool)
	}
	ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
	defer cancel()
	err := cfg.Cluster.ClaimNetwork(ctx, cn)
	if errors.Is(err, cluster.ErrConflict) {
		return invalidf("%v", err)
	}
	if err != nil {
		return fmt.Errorf("cross-host network %s=%d: etcd must be reachable to create it: %w", OptVXLANID, n.VNI, err)
	}
	return nil
}

// checkLocalVNI refuses a VNI another network of this host already has.
func (d *Driver) checkLocalVNI(n *store.Network) error {
	nets, err := d.store.Networks()
	if err != nil {
		return err
	}
	for _, other := range nets {
		if other.VNI == n.VNI && other.ID != n.ID {
			return invalidf("option %s=%d: vxbridge network %s on this host already has that VXLAN id", OptVXLANID, n.VNI, short(other.ID))
		}
	}
	return nil
}

// unclaimCrossHost undoes claimCrossHost after a failed create, unless the
// network was already stored (a replayed create).
func (d *Driver) unclaimCrossHost(n *store.Network) {
	if n.VNI == 0 || d.xh == nil {
		return
	}
	if existing, err := d.store.Network(n.ID); err == nil && existing != nil {
		return
	}
	d.cluster().LeaveNetwork(n.VNI)
}

// ensureVXLAN makes the network's VXLAN device and programs its peers.
func (d *Driver) ensureVXLAN(n *store.Network) error {
	if n.VNI == 0 {
		return nil
	}
	if d.xh == nil {
		return fmt.Errorf("network %s is cross-host (%s=%d) but vxbridge runs without --etcd-endpoints: its containers reach this host only",
			short(n.ID), OptVXLANID, n.VNI)
	}
	vx, err := d.vxlanOf(n)
	if err != nil {
		return err
	}
	err = vx.EnsureDevice(d.vxlanDevice(n))
	if errors.Is(err, vxlan.ErrNotOwned) {
		return invalidf("%v: remove it or use another %s", err, OptVXLANID)
	}
	if err != nil {
		return fmt.Errorf("vxlan device of network %s: %w", short(n.ID), err)
	}
	d.syncNetwork(n)
	return nil
}

// vxlanOf returns the VXLAN interface of the namespace where network n's
// device is: its own namespace when it has one (the device is created in
// the host's and moved there), made again if it is missing.
func (d *Driver) vxlanOf(n *store.Network) (VXLAN, error) {
	if n.NetNS == "" {
		return d.hostVXLAN(), nil
	}
	ns, err := d.ensureNetNS(n)
	if err != nil {
		return nil, err
	}
	return ns.VXLAN(), nil
}

// openVXLAN is vxlanOf without making a lost namespace again: found is
// false then (the device went with it).
func (d *Driver) openVXLAN(n *store.Network) (vx VXLAN, found bool, err error) {
	if n.NetNS == "" {
		return d.hostVXLAN(), true, nil
	}
	ns, found, err := d.openNetNS(n)
	if err != nil || !found {
		return nil, false, err
	}
	return ns.VXLAN(), true, nil
}

func (d *Driver) vxlanDevice(n *store.Network) vxlan.Device {
	c := d.xh.cfg
	return vxlan.Device{
		Name: vxlan.DeviceName(n.VNI), Alias: vxlanAlias(n.ID), VNI: n.VNI, Port: c.Port,
		Local: c.VTEP, Parent: c.VTEPInterface, MTU: n.MTU, Bridge: n.Bridge, Isolated: !n.ICC,
	}
}

// teardownCrossHost removes the VXLAN device and ends the membership.
func (d *Driver) teardownCrossHost(n *store.Network) {
	if n.VNI == 0 || d.xh == nil {
		return // an orphan device goes with the next reconcile
	}
	if vx, found, err := d.openVXLAN(n); err != nil {
		d.logUndoErr("delete vxlan device", err, "vni", n.VNI)
	} else if found {
		d.logUndoErr("delete vxlan device", vx.DeleteDevice(vxlan.DeviceName(n.VNI), vxlanAlias(n.ID)), "vni", n.VNI)
	}
	d.cluster().LeaveNetwork(n.VNI)
	// Its address blocks go back to the cluster, in the background: a
	// subnet must not be used up by hosts that once had the network.
	for _, s := range n.Subnets() {
		go func(p netip.Prefix) {
			ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
			defer cancel()
			if err := d.blocks().ReleaseBlocks(ctx, p); err != nil {
				d.log.Warn("address blocks not given back; they stay this host's", "pool", p, "err", err)
			}
		}(s.Pool)
	}
}

// crossHostCreated runs after a cross-host network is stored: an address
// block is leased ahead of the first container, in the background.
func (d *Driver) crossHostCreated(n *store.Network) {
	if n.VNI == 0 || d.xh == nil {
		return
	}
	for _, s := range n.Subnets() {
		go func(p netip.Prefix) {
			ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
			defer cancel()
			if err := d.blocks().Prefetch(ctx, p); err != nil {
				d.log.Warn("no address block leased ahead; the first container will ask etcd", "pool", p, "err", err)
			}
		}(s.Pool)
	}
}

// publishEndpoint hands a cross-host endpoint to the cluster (no waiting).
func (d *Driver) publishEndpoint(n *store.Network, ep *store.Endpoint) {
	if n.VNI == 0 || d.xh == nil {
		return
	}
	d.cluster().Publish(cluster.Endpoint{ID: ep.ID, VNI: n.VNI, MAC: ep.MAC, IPv4: ep.IPv4.Addr(), IPv6: ep.IPv6.Addr()})
}

// withdrawEndpoint takes an endpoint out of the cluster (no waiting);
// harmless for endpoints that were never published.
func (d *Driver) withdrawEndpoint(ep *store.Endpoint) {
	if d.xh != nil {
		d.cluster().Withdraw(ep.ID)
	}
}

// reconcileCrossHost re-publishes this host's cross-host networks and
// endpoints (after a restart the cluster client starts empty) and re-programs
// every VXLAN device from the last view. d.mu held.
func (d *Driver) reconcileCrossHost(nets []store.Network, eps []store.Endpoint) {
	if d.xh == nil {
		return
	}
	byID := map[string]*store.Network{}
	for i := range nets {
		if nets[i].VNI != 0 {
			byID[nets[i].ID] = &nets[i]
			d.cluster().Rejoin(nets[i].VNI)
		}
	}
	for i := range eps {
		if n := byID[eps[i].NetworkID]; n != nil {
			d.publishEndpoint(n, &eps[i])
		}
	}
	d.syncNetworks(nets)
}

// RunCrossHost follows the cluster until ctx ends, re-programming the VXLAN
// devices on every change. Without cross-host configuration it returns.
func (d *Driver) RunCrossHost(ctx context.Context) {
	if d.xh == nil {
		return
	}
	d.xh.cfg.Cluster.Watch(ctx, func(v cluster.View) {
		// Under d.mu, so no device is created or deleted under the sync.
		d.mu.Lock()
		defer d.mu.Unlock()
		d.xh.mu.Lock()
		d.xh.view, d.xh.haveView = v, true
		d.xh.mu.Unlock()
		nets, err := d.store.Networks()
		if err != nil {
			d.log.Error("cross-host: read networks", "err", err)
			return
		}
		d.syncNetworks(nets)
	})
}

func (d *Driver) syncNetworks(nets []store.Network) {
	total := 0
	for i := range nets {
		if nets[i].VNI != 0 {
			total += d.syncNetwork(&nets[i])
		}
	}
	if total > 0 {
		if _, _, err := d.xh.cfg.VXLAN.EnsureNeighLimits(total); err != nil {
			d.log.Warn("cross-host: neighbour-table limits", "err", err)
		}
	}
}

// syncNetwork programs the network's VXLAN device from the last view and
// returns how many neighbour entries it wants. Before the first view it
// changes nothing: after a restart with etcd down, the entries already in
// the kernel keep known peers reachable.
func (d *Driver) syncNetwork(n *store.Network) int {
	d.xh.mu.Lock()
	view, ok := d.xh.view, d.xh.haveView
	d.xh.mu.Unlock()
	if !ok {
		return 0
	}
	want := vxlan.Desired(peersOf(view.Remotes(d.xh.cfg.Cluster.HostID(), n.VNI)))
	d.xh.syncMu.Lock()
	defer d.xh.syncMu.Unlock()
	vx, err := d.vxlanOf(n)
	var c vxlan.Changes
	if err == nil {
		c, err = vx.Sync(vxlan.DeviceName(n.VNI), want)
	}
	if err != nil {
		d.log.Warn("cross-host: programming peers failed; the next change or reconcile retries", "network", short(n.ID), "vni", n.VNI, "err", err)
	}
	if !c.Empty() {
		d.log.Info("cross-host peers programmed", "network", short(n.ID), "vni", n.VNI,
			"fdb_set", len(c.SetFDB), "fdb_deleted", len(c.DelFDB), "neigh_set", len(c.SetNeigh), "neigh_deleted", len(c.DelNeigh))
	}
	return len(want.Neigh)
}

func peersOf(remotes []cluster.Remote) []vxlan.Peer {
	out := make([]vxlan.Peer, 0, len(remotes))
	for _, r := range remotes {
		mac, err := net.ParseMAC(r.MAC)
		if err != nil {
			continue
		}
		p := vxlan.Peer{MAC: mac, VTEP: r.VTEP}
		for _, ip := range []netip.Addr{r.IPv4, r.IPv6} {
			if ip.IsValid() {
				p.IPs = append(p.IPs, ip)
			}
		}
		out = append(out, p)
	}
	return out
}
