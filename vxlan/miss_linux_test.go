package vxlan

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

// TestOnDemandDataPlane: devices made with OnDemand report misses; entries
// written for them, transient, carry the traffic; nothing is programmed for
// a peer nobody talks to. It also times the first ping to a peer not yet
// programmed, which waits for the container's ARP retry.
func TestOnDemandDataPlane(t *testing.T) {
	nstest.RequireRoot(t)
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("ping not installed (apt-get install iputils-ping)")
	}
	a := newTestHost(t, "192.0.2.1", "10.9.0.1/24")
	b := newTestHost(t, "192.0.2.2", "10.9.0.2/24")
	vethTo(t, a.host, "ul0", b.host, "ul0", 1500)
	linkUp(t, a.host, "ul0", "192.0.2.1/24")
	linkUp(t, b.host, "ul0", "192.0.2.2/24")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, pair := range [][2]*testHost{{a, b}, {b, a}} {
		h, peer := pair[0], pair[1]
		h.dev.OnDemand = true
		must(t, h.m.EnsureDevice(h.dev))
		link, err := h.net.Handle().LinkByName(h.dev.Name)
		must(t, err)
		if vx := link.(*netlink.Vxlan); !vx.L2miss || !vx.L3miss {
			t.Fatalf("device made without miss notifications: l2miss %t l3miss %t", vx.L2miss, vx.L3miss)
		}
		misses := make(chan Miss, 16)
		go func() { _ = h.m.WatchMisses(ctx, h.dev.Name, func(m Miss) { misses <- m }) }()
		// The peer's answer, as package peers would give it.
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case m := <-misses:
					if m.IP != peer.ips[0] && m.MAC != peer.mac.String() {
						continue // not a peer of this test (e.g. the other host's own)
					}
					c := Changes{Transient: true, SetFDB: []FDB{{MAC: peer.mac.String(), Dst: peer.vtep}}}
					if m.IP.IsValid() {
						c.SetNeigh = []Neigh{{IP: m.IP, MAC: peer.mac.String()}}
					}
					if err := h.m.Apply(h.dev.Name, c); err != nil {
						t.Errorf("apply on miss: %v", err)
					}
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // the subscriptions are up
	if got, err := a.m.Entries(a.dev.Name); err != nil || len(got.FDB)+len(got.Neigh) != 0 {
		t.Fatalf("entries before any traffic: %+v, %v", got, err)
	}
	start := time.Now()
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if err = ping(a.ctr, "10.9.0.2"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("ping across with entries on demand: %v", err)
	}
	t.Logf("first ping answered %v after it was sent (the ARP request that missed is not answered; the retry is)", time.Since(start).Round(time.Millisecond))
	got, err := a.m.Entries(a.dev.Name)
	must(t, err)
	if len(got.FDB) != 1 || len(got.Neigh) != 1 || got.Neigh[0].IP != b.ips[0] {
		t.Fatalf("entries after traffic: %+v, want the one peer talked to", got)
	}
	link, err := a.net.Handle().LinkByName(a.dev.Name)
	must(t, err)
	neighs, err := a.net.Handle().NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	must(t, err)
	for _, n := range neighs {
		if n.State&netlink.NUD_PERMANENT != 0 {
			t.Fatalf("entry programmed on demand is permanent: %+v (it must age out)", n)
		}
	}
}
