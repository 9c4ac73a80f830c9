package bridge

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/internal/netdev"
	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

// nsHandle opens a handle of n's namespace, closed when the test ends.
func nsHandle(t *testing.T, n *nstest.NS) netns.NsHandle {
	t.Helper()
	var h netns.NsHandle
	if err := n.Do(func() (err error) { h, err = netns.Get(); return err }); err != nil {
		t.Fatalf("namespace handle: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// A network in a namespace of its own: its bridge there, the gateway link
// from it into the host's namespace (born half-built, finished by the
// host's EnsureGateway), and an endpoint whose host end is on that bridge
// while docker's end appears in the host's namespace.
func TestGatewayLinkAndEndpointAcrossNamespaces(t *testing.T) {
	netM, netNS := newBridgeNS(t) // the network's namespace, bridge vxb0
	hostM, hostNS := newTestManager(t)
	hostFd := int(nsHandle(t, hostNS))

	gw := VethConfig{HostName: "vxgw", PeerName: "vxb0", Bridge: "vxb0", Alias: "vxbridge:gw:test",
		MTU: 1400, PeerNS: hostFd, PeerBuilding: true}
	if err := netM.AddVeth(gw); err != nil {
		t.Fatal(err)
	}
	host := mustLink(t, hostNS.Handle(), "vxb0")
	if host.Type() != "veth" || host.Attrs().Group != netdev.BuildGroup || host.Attrs().Alias != "" || host.Attrs().MTU != 1400 {
		t.Fatalf("host end of the gateway link: %s group %#x alias %q mtu %d; want a half-built veth, mtu 1400",
			host.Type(), host.Attrs().Group, host.Attrs().Alias, host.Attrs().MTU)
	}
	if inner := mustLink(t, netNS.Handle(), "vxgw"); inner.Attrs().MasterIndex != mustLink(t, netNS.Handle(), "vxb0").Attrs().Index {
		t.Errorf("inner end of the gateway link is not on the bridge")
	}

	cfg := BridgeConfig{Name: "vxb0", Alias: netAlias, MTU: 1400,
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.1.0.1/24"), netip.MustParsePrefix("fd00:1::1/64")}}
	for range 2 { // a replay changes nothing
		if err := hostM.EnsureGateway(cfg); err != nil {
			t.Fatal(err)
		}
	}
	host = mustLink(t, hostNS.Handle(), "vxb0")
	a := host.Attrs()
	if a.Alias != netAlias || a.Group != 0 || a.Flags&1 == 0 {
		t.Errorf("gateway link after EnsureGateway: alias %q group %#x flags %v", a.Alias, a.Group, a.Flags)
	}
	addrs, err := hostNS.Handle().AddrList(host, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ad := range addrs {
		if ad.IP.IsGlobalUnicast() {
			got = append(got, ad.IPNet.String())
		}
	}
	slices.Sort(got)
	if want := []string{"10.1.0.1/24", "fd00:1::1/64"}; !slices.Equal(got, want) {
		t.Errorf("gateway addresses = %v, want %v", got, want)
	}

	// An endpoint: host end on the network's bridge, docker's end in the host's namespace.
	ep := testVethConfig()
	ep.PeerNS = hostFd
	if err := netM.AddVeth(ep); err != nil {
		t.Fatal(err)
	}
	peer := mustLink(t, hostNS.Handle(), ep.PeerName)
	if peer.Attrs().HardwareAddr.String() != ep.MAC.String() || peer.Attrs().Group != 0 {
		t.Errorf("docker's end: mac %s group %#x, want %s group 0", peer.Attrs().HardwareAddr, peer.Attrs().Group, ep.MAC)
	}
	requireGone(t, netNS.Handle(), ep.PeerName)
	// A reconcile converges the pair it finds.
	if err := netM.EnsureVeth(ep); err != nil {
		t.Fatal(err)
	}
	requireIsolated(t, netNS, ep.HostName, true)

	// Deleting the gateway link from the host's side takes the pair.
	if err := hostM.DeleteGateway("vxb0", netAlias); err != nil {
		t.Fatal(err)
	}
	requireGone(t, netNS.Handle(), "vxgw")
	if err := hostM.DeleteGateway("vxb0", netAlias); err != nil {
		t.Errorf("deleting a missing gateway link: %v", err)
	}
	if err := hostM.EnsureGateway(cfg); err == nil {
		t.Error("EnsureGateway of a missing link succeeded")
	}
}

// EnsureGateway never takes over a link vxbridge did not build.
func TestEnsureGatewayRefusesForeignLinks(t *testing.T) {
	m, n := newTestManager(t)
	addForeign(t, n.Handle(), foreignVeth("fv0"), "")
	addForeign(t, n.Handle(), foreignVeth("fv1"), "someone:else")
	addForeign(t, n.Handle(), &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "fb0", Group: netdev.BuildGroup}}, "")
	for _, name := range []string{"fv0", "fv1", "fb0"} {
		err := m.EnsureGateway(BridgeConfig{Name: name, Alias: netAlias})
		if !errors.Is(err, netdev.ErrNotOwned) {
			t.Errorf("EnsureGateway(%s) = %v, want ErrNotOwned", name, err)
		}
		if err := m.DeleteGateway(name, netAlias); !errors.Is(err, netdev.ErrNotOwned) {
			t.Errorf("DeleteGateway(%s) = %v, want ErrNotOwned", name, err)
		}
		if l := mustLink(t, n.Handle(), name); l.Attrs().Alias == netAlias {
			t.Errorf("%s was changed", name)
		}
	}
}
