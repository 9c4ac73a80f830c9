package driver

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
)

// fakeHostAddrs hands out 10.42.0.70 once release is closed.
type fakeHostAddrs struct{ release chan struct{} }

func (f fakeHostAddrs) HostAddress(ctx context.Context, pool netip.Prefix) (netip.Addr, error) {
	select {
	case <-f.release:
		return netip.MustParseAddr("10.42.0.70"), nil
	case <-ctx.Done():
		return netip.Addr{}, ctx.Err()
	}
}

// TestHostReach: a cross-host network's own address of this host is taken
// in the background (CreateNetwork does not wait for it), then put on the
// gateway link, used as the source of the host's own traffic and
// published with the link's MAC.
func TestHostReach(t *testing.T) {
	h := newXHHarness(t)
	ha := fakeHostAddrs{release: make(chan struct{})}
	h.d.xh.cfg.HostAddrs = ha
	start := time.Now()
	mustCreate(t, h.harness, xhReq("42", ""))
	if d := time.Since(start); d > time.Second {
		t.Fatalf("CreateNetwork waited %s for the host address", d)
	}
	if _, ok := h.published(hostEndpointID(42)); ok {
		t.Fatal("published before the address was taken")
	}
	close(ha.release)
	host := netip.MustParseAddr("10.42.0.70")
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec, ok := h.published(hostEndpointID(42))
		if ok && rec.IPv4 == host && rec.MAC == h.links.Links["vxb-aaaaaaaaaaa"].MAC && rec.MAC != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host record %+v %v", rec, ok)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if addrs := h.links.Bridges["vxb-aaaaaaaaaaa"].Addrs; !slices.Contains(addrs, netip.PrefixFrom(host, 32)) {
		t.Fatalf("gateway addresses %v lack %s/32", addrs, host)
	}
	if got := h.fw.Nets[netA].HostAddrs; !slices.Equal(got, []netip.Addr{host}) {
		t.Fatalf("firewall host addresses %v", got)
	}
	// A reconcile keeps all of it.
	if _, err := h.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if addrs := h.links.Bridges["vxb-aaaaaaaaaaa"].Addrs; !slices.Contains(addrs, netip.PrefixFrom(host, 32)) {
		t.Fatalf("after a reconcile, gateway addresses %v lack %s/32", addrs, host)
	}
	if err := h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.published(hostEndpointID(42)); ok {
		t.Fatal("the host record outlived its network")
	}
}
