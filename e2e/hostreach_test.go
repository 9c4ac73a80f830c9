package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/status"
)

// Each host publishes its own address of a cross-host network like an
// endpoint (driver/hostreach.go): the checks that compare the kernel's
// VXLAN tables and the IPAM with the endpoints count them too, from each
// plugin's status.

// hostAddrsOf lists the host's own addresses in its status.
func hostAddrsOf(r *status.Report) []netip.Prefix {
	var out []netip.Prefix
	if r == nil || r.Cluster == nil {
		return nil
	}
	for _, h := range r.Cluster.HostAddrs {
		for _, s := range h.Addresses {
			if a, err := netip.ParseAddr(s); err == nil {
				out = append(out, netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	return out
}

// hostRecords are a host's own address records as cross-host endpoints.
func hostRecords(host string, r *status.Report) []xhostEndpoint {
	if r == nil || r.Cluster == nil {
		return nil
	}
	var out []xhostEndpoint
	for _, h := range r.Cluster.HostAddrs {
		vni, _ := strconv.Atoi(h.Network)
		e := xhostEndpoint{host: host, id: "host-" + h.Network, vni: vni, mac: strings.ToLower(h.MAC)}
		for _, s := range h.Addresses {
			if a, err := netip.ParseAddr(s); err == nil {
				e.ips = append(e.ips, a)
			}
		}
		out = append(out, e)
	}
	return out
}

// dropHostRecords removes from h's tables the entries of the other hosts'
// own addresses (which waitProgrammed does not compare), after checking
// they point at their host's VTEP. Every host that has the network
// publishes one, with or without containers there (so h3's appears on h1
// before c3 runs). Hosts whose status cannot be read keep their entries:
// the comparison then fails and says so.
func (m *multiHost) dropHostRecords(h *testbed.Host, fdb, neigh map[string]string) {
	for _, g := range m.hosts {
		if g == h {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := status.Fetch(ctx, g.PluginSocket())
		cancel()
		if err != nil {
			continue
		}
		for _, rec := range hostRecords(g.Name, r) {
			if fdb[rec.mac] == m.vteps[g] {
				delete(fdb, rec.mac)
			}
			for _, a := range rec.ips {
				if neigh[a.String()] == rec.mac {
					delete(neigh, a.String())
				}
			}
		}
	}
}

// hostRecordKeys are the etcd keys of host h's own address records (id is
// its host id), as its status lists them; none when it cannot be read.
func hostRecordKeys(h *testbed.Host, id string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := status.Fetch(ctx, h.PluginSocket())
	if err != nil {
		return nil
	}
	var out []string
	for _, rec := range hostRecords(h.Name, r) {
		out = append(out, "/vxbridge/endpoints/"+id+"/"+rec.id,
			"/vxbridge/net/"+strconv.Itoa(rec.vni)+"/eps/"+id+"/"+rec.id)
	}
	return out
}

// hostsReachContainers: every host's own namespace reaches every one of
// containers, on every host, with ICMP (v4 and v6) and TCP: replies come
// back to the host that sent, not to the gateway of the container's host.
func (m *multiHost) hostsReachContainers(t *testing.T, containers []ctr) {
	for _, from := range m.hosts {
		for _, to := range containers {
			for _, args := range [][]string{{"-c", "1", "-W", "2", to.ip4}, {"-6", "-c", "1", "-W", "2", to.ip6}} {
				err := testbed.Poll(10*time.Second, func() error {
					out, err := from.TryExec("ping", args...)
					if err != nil {
						return fmt.Errorf("%v: %s", err, out)
					}
					return nil
				})
				if err != nil {
					t.Errorf("ping %v from %s's namespace to %s's %s: %v", args, from.Name, to.h.Name, to.name, err)
				}
			}
		}
	}
	// TCP from the first host's namespace to the last container.
	tcpDelivered(t, containers[len(containers)-1], 7000, "from-the-host", onHost(m.hosts[0]))
}
