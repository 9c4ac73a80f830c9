package bridge

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vxbridge/vxbridge/internal/netdev"
	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

func testVethConfig() VethConfig {
	return VethConfig{
		HostName: "vxh0",
		PeerName: "vxp0",
		Bridge:   "vxb0",
		Alias:    epAlias,
		MTU:      1400,
		MAC:      net.HardwareAddr{0x02, 0x42, 0x0a, 0x01, 0x00, 0x02},
		Isolated: true,
		Hairpin:  true,
	}
}

// newBridgeNS is newTestManager with vxbridge's bridge vxb0 in place.
func newBridgeNS(t *testing.T) (*Manager, *nstest.NS) {
	t.Helper()
	m, n := newTestManager(t)
	if err := m.EnsureBridge(testBridgeConfig()); err != nil {
		t.Fatal(err)
	}
	return m, n
}

// bridgeLinkShow is `bridge -d link show dev name`, run in the namespace:
// the port flags as iproute2 reads them, independent of the netlink package.
func bridgeLinkShow(t *testing.T, n *nstest.NS, name string) string {
	t.Helper()
	var out []byte
	err := n.Do(func() (err error) {
		out, err = exec.Command("bridge", "-d", "link", "show", "dev", name).CombinedOutput()
		return err
	})
	if errors.Is(err, exec.ErrNotFound) {
		t.Skip("iproute2 bridge command not installed")
	}
	if err != nil {
		t.Fatalf("bridge link show %s: %v: %s", name, err, out)
	}
	return string(out)
}

func requireIsolated(t *testing.T, n *nstest.NS, name string, want bool) {
	t.Helper()
	pi, err := n.Handle().LinkGetProtinfo(mustLink(t, n.Handle(), name))
	if err != nil {
		t.Fatalf("protinfo of %q: %v", name, err)
	}
	if pi.Isolated != want {
		t.Errorf("netlink: %q isolated = %t, want %t", name, pi.Isolated, want)
	}
	out := bridgeLinkShow(t, n, name)
	if wantText := fmt.Sprintf("isolated %s", map[bool]string{true: "on", false: "off"}[want]); !strings.Contains(out, wantText) {
		t.Errorf("bridge -d link show %s lacks %q:\n%s", name, wantText, out)
	}
}

// Both ways of making a pair (AddVeth: one creating request; EnsureVeth: look up,
// then create through the netlink package) must give the same link.
func TestEnsureVethCreates(t *testing.T) {
	for _, way := range vethWays {
		t.Run(way, func(t *testing.T) { testEnsureVethCreates(t, way) })
	}
}

func testEnsureVethCreates(t *testing.T, way string) {
	m, n := newBridgeNS(t)
	makeVeth := vethMaker(m, way)
	h := n.Handle()
	cfg := testVethConfig()
	if err := makeVeth(cfg); err != nil {
		t.Fatalf("EnsureVeth: %v", err)
	}
	br := mustLink(t, h, "vxb0")
	host := mustLink(t, h, "vxh0")
	a := host.Attrs()
	if host.Type() != "veth" || a.Alias != epAlias || a.MTU != 1400 || a.MasterIndex != br.Attrs().Index || a.Flags&net.FlagUp == 0 {
		t.Errorf("host end: type %s alias %q mtu %d master %d (bridge %d) flags %v",
			host.Type(), a.Alias, a.MTU, a.MasterIndex, br.Attrs().Index, a.Flags)
	}
	if a.Group != 0 || a.TxQLen != 0 {
		t.Errorf("host end: group %#x txqlen %d, want 0 (built) and 0", a.Group, a.TxQLen)
	}
	requireIsolated(t, n, "vxh0", true)
	if pi, err := h.LinkGetProtinfo(host); err != nil || !pi.Hairpin {
		t.Errorf("hairpin mode not on: %+v, %v", pi, err)
	}

	peer := mustLink(t, h, "vxp0").Attrs()
	if peer.HardwareAddr.String() != cfg.MAC.String() || peer.MTU != 1400 || peer.Flags&net.FlagUp != 0 || peer.Alias != "" {
		t.Errorf("peer end: mac %s mtu %d flags %v alias %q, want %s 1400 down no alias",
			peer.HardwareAddr, peer.MTU, peer.Flags, peer.Alias, cfg.MAC)
	}

	info, ok, err := m.Link("vxh0")
	if err != nil || !ok {
		t.Fatalf("Link: %v %t", err, ok)
	}
	info.MAC = "" // random
	if want := (LinkInfo{Name: "vxh0", Alias: epAlias, Kind: "veth", Master: "vxb0", MTU: 1400}); info != want {
		t.Errorf("Link = %+v, want %+v", info, want)
	}
	if _, ok, err := m.Link("nothere"); ok || err != nil {
		t.Errorf("Link of a missing name: %t, %v", ok, err)
	}
}

func TestEnsureVethIsIdempotentAndConverges(t *testing.T) {
	m, n := newBridgeNS(t)
	h := n.Handle()
	cfg := testVethConfig()
	if err := m.EnsureVeth(cfg); err != nil {
		t.Fatal(err)
	}
	index := mustLink(t, h, "vxh0").Attrs().Index
	if err := m.EnsureVeth(cfg); err != nil {
		t.Fatalf("second EnsureVeth: %v", err)
	}
	if got := mustLink(t, h, "vxh0").Attrs().Index; got != index {
		t.Errorf("veth recreated: index %d -> %d", index, got)
	}

	// Someone released the port and took it down: a replay repairs it.
	host := mustLink(t, h, "vxh0")
	if err := h.LinkSetNoMaster(host); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetDown(host); err != nil {
		t.Fatal(err)
	}
	cfg.Isolated = false
	if err := m.EnsureVeth(cfg); err != nil {
		t.Fatalf("EnsureVeth on a released port: %v", err)
	}
	a := mustLink(t, h, "vxh0").Attrs()
	if a.MasterIndex != mustLink(t, h, "vxb0").Attrs().Index || a.Flags&net.FlagUp == 0 {
		t.Errorf("not repaired: master %d flags %v", a.MasterIndex, a.Flags)
	}
	requireIsolated(t, n, "vxh0", false)
}

func TestEnsureVethRefusesForeignLink(t *testing.T) {
	m, n := newBridgeNS(t)
	h := n.Handle()
	addForeign(t, h, foreignVeth("vxh0"), "vxbridge:ep:other")
	addForeign(t, h, foreignBridge("vxh1"), epAlias)
	for _, host := range []string{"vxh0", "vxh1"} {
		cfg := testVethConfig()
		cfg.HostName, cfg.PeerName = host, "vxp9"
		if err := m.EnsureVeth(cfg); !errors.Is(err, netdev.ErrNotOwned) {
			t.Errorf("EnsureVeth over foreign %q: %v, want ErrNotOwned", host, err)
		}
		if mustLink(t, h, host).Attrs().MasterIndex != 0 {
			t.Errorf("foreign %q was enslaved", host)
		}
	}
	requireGone(t, h, "vxp9")
}

// A foreign link named like the container end: both ways of making a pair
// refuse, naming that link (the kernel's EEXIST names neither end), and
// leave it alone.
func TestVethPeerNameTaken(t *testing.T) {
	m, n := newBridgeNS(t)
	h := n.Handle()
	addForeign(t, h, foreignBridge("vxp9"), "")
	for name, makePair := range map[string]func(VethConfig) error{"EnsureVeth": m.EnsureVeth, "AddVeth": m.AddVeth} {
		cfg := testVethConfig()
		cfg.HostName, cfg.PeerName = "vxh9", "vxp9"
		err := makePair(cfg)
		if !errors.Is(err, netdev.ErrNotOwned) || !strings.Contains(err.Error(), `container end is taken: interface "vxp9"`) {
			t.Errorf("%s with its peer's name taken: %v, want ErrNotOwned naming vxp9", name, err)
		}
		if mustLink(t, h, "vxp9").Type() != "bridge" {
			t.Errorf("%s: the foreign vxp9 was changed", name)
		}
		requireGone(t, h, "vxh9")
	}
}

func TestEnsureVethLeavesNothingOnFailure(t *testing.T) {
	for _, way := range vethWays {
		t.Run(way, func(t *testing.T) { testEnsureVethLeavesNothing(t, way) })
	}
}

func testEnsureVethLeavesNothing(t *testing.T, way string) {
	m, n := newBridgeNS(t)
	makeVeth := vethMaker(m, way)
	h := n.Handle()
	cfg := testVethConfig()
	cfg.Bridge = "nobridge"
	if err := makeVeth(cfg); err == nil {
		t.Error("EnsureVeth onto a missing bridge succeeded")
	}
	requireGone(t, h, "vxh0", "vxp0")

	// A veth cannot take ports: the kernel refuses only after the pair
	// exists, and the half-built pair must go.
	addForeign(t, h, foreignVeth("notbr"), "")
	cfg.Bridge = "notbr"
	if err := makeVeth(cfg); err == nil {
		t.Error("EnsureVeth onto a veth succeeded")
	} else {
		t.Log(err)
	}
	requireGone(t, h, "vxh0", "vxp0")

	// The peer name is taken: nothing is created, the other link stays.
	addForeign(t, h, foreignBridge("vxp0"), "")
	cfg.Bridge = "vxb0"
	if err := makeVeth(cfg); err == nil {
		t.Error("EnsureVeth with a taken peer name succeeded")
	}
	requireGone(t, h, "vxh0")
	mustLink(t, h, "vxp0")
}

// AddVeth adopts a pair that exists already, as EnsureVeth does.
func TestAddVethAdoptsExisting(t *testing.T) {
	m, n := newBridgeNS(t)
	cfg := testVethConfig()
	if err := m.AddVeth(cfg); err != nil {
		t.Fatal(err)
	}
	first := mustLink(t, n.Handle(), "vxh0")
	if first.Attrs().Alias != cfg.Alias || first.Attrs().MasterIndex == 0 || first.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("added veth: alias %q master %d flags %v", first.Attrs().Alias, first.Attrs().MasterIndex, first.Attrs().Flags)
	}
	if err := m.AddVeth(cfg); err != nil {
		t.Fatalf("AddVeth of an existing pair: %v", err)
	}
	if again := mustLink(t, n.Handle(), "vxh0"); again.Attrs().Index != first.Attrs().Index {
		t.Error("the existing pair was replaced")
	}
}

func TestEnsureVethConcurrent(t *testing.T) {
	m, _ := newBridgeNS(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			cfg := testVethConfig()
			cfg.HostName, cfg.PeerName = fmt.Sprintf("vxh%d", i%4), fmt.Sprintf("vxp%d", i%4)
			cfg.MAC = nil
			errs[i] = m.EnsureVeth(cfg)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	owned, err := m.OwnedLinks(epAlias)
	if err != nil || len(owned) != 4 {
		t.Errorf("OwnedLinks: %d links, %v; want 4", len(owned), err)
	}
}

func TestDeleteLink(t *testing.T) {
	m, n := newBridgeNS(t)
	h := n.Handle()
	if err := m.DeleteLink("vxh0"); err != nil {
		t.Fatalf("DeleteLink of a missing link: %v", err)
	}
	if err := m.EnsureVeth(testVethConfig()); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteLink("vxh0"); err != nil {
		t.Fatalf("DeleteLink: %v", err)
	}
	requireGone(t, h, "vxh0", "vxp0")
	mustLink(t, h, "vxb0")
}

func TestOwnedLinks(t *testing.T) {
	m, n := newBridgeNS(t)
	h := n.Handle()
	if err := m.EnsureVeth(testVethConfig()); err != nil {
		t.Fatal(err)
	}
	addForeign(t, h, foreignBridge("other0"), "someone:else")
	addForeign(t, h, foreignVeth("other1"), "")

	owned, err := m.OwnedLinks("vxbridge:")
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(owned, func(a, b LinkInfo) int { return strings.Compare(a.Name, b.Name) })
	for i := range owned {
		owned[i].MAC = "" // random
	}
	want := []LinkInfo{
		{Name: "vxb0", Alias: netAlias, Kind: "bridge", MTU: 1400},
		{Name: "vxh0", Alias: epAlias, Kind: "veth", Master: "vxb0", MTU: 1400},
	}
	if !slices.Equal(owned, want) {
		t.Errorf("OwnedLinks(vxbridge:) = %+v\nwant %+v", owned, want)
	}
	if eps, err := m.OwnedLinks("vxbridge:ep:"); err != nil || len(eps) != 1 || eps[0].Name != "vxh0" {
		t.Errorf("OwnedLinks(vxbridge:ep:) = %+v, %v", eps, err)
	}
	if none, err := m.OwnedLinks("nobody:"); err != nil || len(none) != 0 {
		t.Errorf("OwnedLinks(nobody:) = %+v, %v", none, err)
	}
	if _, err := m.OwnedLinks(""); err == nil {
		t.Error("OwnedLinks with an empty prefix accepted")
	}
}
