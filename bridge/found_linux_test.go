package bridge

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/vxbridge/vxbridge/internal/netdev"
	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

// Inspect reads back what adoption needs: a bridge's gateways, and of an
// endpoint's veth the peer's MAC and addresses, in the Manager's namespace
// (an endpoint not joined yet) and in a container's (joined: the peer
// moved and renamed, as docker does).
func TestInspectReadsPeersWhereverTheyAre(t *testing.T) {
	m, n := newBridgeNS(t)
	br, found, err := m.Inspect("vxb0")
	if err != nil || !found {
		t.Fatalf("Inspect bridge: %v %v", found, err)
	}
	if br.Kind != "bridge" || br.Alias != netAlias || !slices.Equal(sortedPrefixes(br.Addrs), prefixes("10.1.0.1/24", "fd00:1::1/64")) {
		t.Errorf("bridge read back as %+v", br)
	}

	cfg := testVethConfig()
	if err := m.EnsureVeth(cfg); err != nil {
		t.Fatal(err)
	}
	here, _, err := m.Inspect(cfg.HostName)
	if err != nil {
		t.Fatal(err)
	}
	if here.Master != "vxb0" || here.Peer == nil || here.Peer.Elsewhere || here.Peer.Name != cfg.PeerName || here.Peer.MAC.String() != cfg.MAC.String() {
		t.Errorf("veth not joined read back as %+v, peer %+v", here, here.Peer)
	}

	// Joined: the peer goes into the container's namespace, renamed, with
	// its address.
	container := nstest.New(t)
	h := n.Handle()
	peer := mustLink(t, h, cfg.PeerName)
	if err := h.LinkSetNsFd(peer, int(container.NsHandle(t))); err != nil {
		t.Fatal(err)
	}
	c := container.Handle()
	eth := mustLink(t, c, cfg.PeerName)
	if err := c.LinkSetName(eth, "eth0"); err != nil {
		t.Fatal(err)
	}
	eth = mustLink(t, c, "eth0")
	for _, a := range []string{"10.1.0.5/24", "fd00:1::5/64"} {
		if err := c.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix(a))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.LinkSetUp(eth); err != nil {
		t.Fatal(err)
	}
	joined, _, err := m.Inspect(cfg.HostName)
	if err != nil {
		t.Fatal(err)
	}
	p := joined.Peer
	if p == nil || !p.Elsewhere || p.Name != "eth0" || p.MAC.String() != cfg.MAC.String() ||
		!slices.Equal(sortedPrefixes(p.Addrs), prefixes("10.1.0.5/24", "fd00:1::5/64")) {
		t.Errorf("joined veth's peer read back as %+v", p)
	}
	if _, found, err := m.Inspect("nothere"); found || err != nil {
		t.Errorf("Inspect of a missing link: %v %v", found, err)
	}
}

func TestSetAliasTakesOverOnlyWhatItIsTold(t *testing.T) {
	m, n := newBridgeNS(t)
	const to = "vxbridge:0123456789ab:net:test"
	if err := m.SetAlias("vxb0", "vxbridge:net:other", to); !errors.Is(err, netdev.ErrNotOwned) {
		t.Errorf("SetAlias from the wrong alias: %v, want ErrNotOwned", err)
	}
	if err := m.SetAlias("vxb0", netAlias, to); err != nil {
		t.Fatal(err)
	}
	if got := mustLink(t, n.Handle(), "vxb0").Attrs().Alias; got != to {
		t.Errorf("alias %q, want %q", got, to)
	}
	if err := m.SetAlias("gone", netAlias, to); err != nil {
		t.Errorf("SetAlias of a missing link: %v", err)
	}
}

func sortedPrefixes(p []netip.Prefix) []netip.Prefix {
	out := slices.Clone(p)
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}
