package bridge

import (
	"errors"
	"net"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/internal/netdev"
)

func testBridgeConfig() BridgeConfig {
	return BridgeConfig{
		Name:  "vxb0",
		Alias: netAlias,
		MTU:   1400,
		Addrs: prefixes("10.1.0.1/24", "fd00:1::1/64"),
	}
}

func TestEnsureBridgeCreates(t *testing.T) {
	m, n := newTestManager(t)
	h := n.Handle()
	// New interfaces of this namespace start with IPv6 off, as on hosts that
	// set conf/default/disable_ipv6: EnsureBridge must turn it on.
	writeSysctl(t, n, "net/ipv6/conf/default/disable_ipv6", "1")

	cfg := testBridgeConfig()
	if err := m.EnsureBridge(cfg); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	l := mustLink(t, h, "vxb0")
	a := l.Attrs()
	if l.Type() != "bridge" || a.Alias != netAlias || a.MTU != 1400 || a.Flags&net.FlagUp == 0 {
		t.Errorf("bridge: type %s alias %q mtu %d flags %v", l.Type(), a.Alias, a.MTU, a.Flags)
	}
	requireAddrs(t, h, "vxb0", "10.1.0.1/24", "fd00:1::1/64")
	v6 := addrsOf(t, h, "vxb0")[prefixes("fd00:1::1/64")[0]]
	if v6.Flags&unix.IFA_F_NODAD == 0 || v6.Flags&unix.IFA_F_TENTATIVE != 0 {
		t.Errorf("ipv6 gateway flags %#x: want nodad, not tentative", v6.Flags)
	}
	if got := readSysctl(t, n, "net/ipv6/conf/vxb0/disable_ipv6"); got != "0" {
		t.Errorf("disable_ipv6 on the bridge = %s, want 0", got)
	}

	info, ok, err := m.Link("vxb0")
	if err != nil || !ok {
		t.Fatalf("Link: %v, %t", err, ok)
	}
	if _, err := net.ParseMAC(info.MAC); err != nil {
		t.Errorf("Link's MAC %q: %v", info.MAC, err)
	}
	info.MAC = "" // random
	if want := (LinkInfo{Name: "vxb0", Alias: netAlias, Kind: "bridge", MTU: 1400}); info != want {
		t.Errorf("Link = %+v, want %+v", info, want)
	}
}

func TestEnsureBridgeTwiceIsHarmless(t *testing.T) {
	m, n := newTestManager(t)
	h := n.Handle()
	cfg := testBridgeConfig()
	if err := m.EnsureBridge(cfg); err != nil {
		t.Fatal(err)
	}
	before := mustLink(t, h, "vxb0").Attrs()
	if err := m.EnsureBridge(cfg); err != nil {
		t.Fatalf("second EnsureBridge: %v", err)
	}
	after := mustLink(t, h, "vxb0").Attrs()
	if after.Index != before.Index || after.HardwareAddr.String() != before.HardwareAddr.String() || after.MTU != 1400 {
		t.Errorf("bridge changed: index %d->%d mac %s->%s mtu %d", before.Index, after.Index,
			before.HardwareAddr, after.HardwareAddr, after.MTU)
	}
	requireAddrs(t, h, "vxb0", "10.1.0.1/24", "fd00:1::1/64")
}

func TestEnsureBridgeConverges(t *testing.T) {
	m, n := newTestManager(t)
	h := n.Handle()
	cfg := testBridgeConfig()
	if err := m.EnsureBridge(cfg); err != nil {
		t.Fatal(err)
	}
	// A down bridge must come back up. Taking it down also flushes its IPv6
	// addresses (keep_addr_on_down=0), so the link-local address, which is
	// not vxbridge's to remove, goes on afterwards.
	br := mustLink(t, h, "vxb0")
	if err := h.LinkSetDown(br); err != nil {
		t.Fatal(err)
	}
	ll := &netlink.Addr{IPNet: ipNet(prefixes("fe80::1234/64")[0])}
	if err := h.AddrAdd(br, ll); err != nil {
		t.Fatal(err)
	}

	cfg.MTU = 1300
	cfg.Addrs = prefixes("10.2.0.1/24", "fd00:2::1/64", "10.1.0.1/16")
	if err := m.EnsureBridge(cfg); err != nil {
		t.Fatalf("EnsureBridge with new addresses: %v", err)
	}
	requireAddrs(t, h, "vxb0", "10.2.0.1/24", "fd00:2::1/64", "10.1.0.1/16")
	if _, ok := addrsOf(t, h, "vxb0")[prefixes("fe80::1234/64")[0]]; !ok {
		t.Error("link-local address was removed")
	}
	a := mustLink(t, h, "vxb0").Attrs()
	if a.MTU != 1300 || a.Flags&net.FlagUp == 0 {
		t.Errorf("mtu %d flags %v, want 1300 and up", a.MTU, a.Flags)
	}
}

func TestEnsureBridgeRefusesForeignLink(t *testing.T) {
	for _, tc := range []struct {
		name  string
		link  netlink.Link
		alias string
		kind  string
	}{
		{"bridge without alias", foreignBridge("vxb0"), "", "bridge"},
		{"bridge of another owner", foreignBridge("vxb0"), "someone:else", "bridge"},
		{"veth with our alias", foreignVeth("vxb0"), netAlias, "veth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, n := newTestManager(t)
			h := n.Handle()
			addForeign(t, h, tc.link, tc.alias)
			err := m.EnsureBridge(testBridgeConfig())
			if !errors.Is(err, netdev.ErrNotOwned) {
				t.Fatalf("EnsureBridge over a foreign link: %v, want ErrNotOwned", err)
			}
			var no *netdev.NotOwnedError
			if !errors.As(err, &no) || no.Name != "vxb0" || no.Kind != tc.kind || no.Alias != tc.alias {
				t.Errorf("error details %+v", no)
			}
			t.Log(err)
			a := mustLink(t, h, "vxb0").Attrs()
			if a.Alias != tc.alias || a.Flags&net.FlagUp != 0 {
				t.Errorf("foreign link touched: alias %q flags %v", a.Alias, a.Flags)
			}
			requireAddrs(t, h, "vxb0")
		})
	}
}

func TestEnsureBridgeRollsBackNewBridge(t *testing.T) {
	m, n := newTestManager(t)
	cfg := testBridgeConfig()
	// The kernel refuses a multicast address on an interface, after the
	// bridge exists: the half-built bridge must go.
	cfg.Addrs = prefixes("10.1.0.1/24", "ff02::1/64")
	if err := m.EnsureBridge(cfg); err == nil {
		t.Fatal("EnsureBridge with a multicast address succeeded")
	} else {
		t.Log(err)
	}
	requireGone(t, n.Handle(), "vxb0")
}

func TestEnsureBridgeFailureKeepsExistingBridge(t *testing.T) {
	m, n := newTestManager(t)
	if err := m.EnsureBridge(testBridgeConfig()); err != nil {
		t.Fatal(err)
	}
	cfg := testBridgeConfig()
	cfg.Addrs = prefixes("ff02::1/64")
	if err := m.EnsureBridge(cfg); err == nil {
		t.Fatal("EnsureBridge with a multicast address succeeded")
	}
	mustLink(t, n.Handle(), "vxb0") // not created by the failing call: stays
}

// The kernel lowers a bridge's MTU to its smallest port's unless the MTU was
// set by an explicit change, and replaces its MAC by the smallest port MAC
// unless one was set: both must survive a port joining.
func TestBridgeKeepsMTUAndMACWhenPortJoins(t *testing.T) {
	m, n := newTestManager(t)
	h := n.Handle()
	if err := m.EnsureBridge(testBridgeConfig()); err != nil {
		t.Fatal(err)
	}
	mac := mustLink(t, h, "vxb0").Attrs().HardwareAddr.String()
	veth := VethConfig{HostName: "vxh0", PeerName: "vxp0", Bridge: "vxb0", Alias: epAlias}
	if err := m.EnsureVeth(veth); err != nil { // MTU 0: kernel default 1500
		t.Fatal(err)
	}
	a := mustLink(t, h, "vxb0").Attrs()
	if a.MTU != 1400 || a.HardwareAddr.String() != mac {
		t.Errorf("after a port joined: mtu %d mac %s, want 1400 %s", a.MTU, a.HardwareAddr, mac)
	}
}

func TestDeleteBridge(t *testing.T) {
	m, n := newTestManager(t)
	h := n.Handle()
	if err := m.DeleteBridge("vxb0", netAlias); err != nil {
		t.Fatalf("DeleteBridge of a missing bridge: %v", err)
	}
	if err := m.EnsureBridge(testBridgeConfig()); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteBridge("vxb0", "vxbridge:net:other"); !errors.Is(err, netdev.ErrNotOwned) {
		t.Errorf("DeleteBridge with another alias: %v, want ErrNotOwned", err)
	}
	addForeign(t, h, foreignBridge("docker9"), "")
	addForeign(t, h, foreignVeth("veth9"), netAlias)
	for _, name := range []string{"docker9", "veth9"} {
		if err := m.DeleteBridge(name, netAlias); !errors.Is(err, netdev.ErrNotOwned) {
			t.Errorf("DeleteBridge(%q): %v, want ErrNotOwned", name, err)
		}
		mustLink(t, h, name)
	}
	if err := m.DeleteBridge("vxb0", netAlias); err != nil {
		t.Fatalf("DeleteBridge: %v", err)
	}
	requireGone(t, h, "vxb0")
	if err := m.DeleteBridge("vxb0", ""); err == nil {
		t.Error("DeleteBridge with an empty alias accepted")
	}
}

func TestEnableForwarding(t *testing.T) {
	rootV4, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Skipf("no ip_forward sysctl: %v", err)
	}
	m, n := newTestManager(t)
	writeSysctl(t, n, "net/ipv4/ip_forward", "0")
	writeSysctl(t, n, "net/ipv6/conf/all/forwarding", "0")

	if err := m.EnableForwarding(false); err != nil {
		t.Fatal(err)
	}
	if v4, v6 := readSysctl(t, n, "net/ipv4/ip_forward"), readSysctl(t, n, "net/ipv6/conf/all/forwarding"); v4 != "1" || v6 != "0" {
		t.Errorf("after EnableForwarding(false): ipv4 %s ipv6 %s, want 1 0", v4, v6)
	}
	for range 2 {
		if err := m.EnableForwarding(true); err != nil {
			t.Fatal(err)
		}
	}
	if v6 := readSysctl(t, n, "net/ipv6/conf/all/forwarding"); v6 != "1" {
		t.Errorf("after EnableForwarding(true): ipv6 %s, want 1", v6)
	}
	// The writes happened in the test namespace only.
	if after, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(after) != string(rootV4) {
		t.Errorf("ip_forward of the test's own namespace changed: %q -> %q", rootV4, after)
	}
}

// A Manager from New(nil) works in its caller's namespace, sysctls included.
func TestNewNilHandleUsesCallerNamespace(t *testing.T) {
	_, n := newTestManager(t)
	writeSysctl(t, n, "net/ipv6/conf/default/disable_ipv6", "1")
	err := n.Do(func() error {
		m := New(nil)
		if err := m.EnsureBridge(testBridgeConfig()); err != nil {
			return err
		}
		return m.EnableForwarding(false)
	})
	if err != nil {
		t.Fatal(err)
	}
	requireAddrs(t, n.Handle(), "vxb0", "10.1.0.1/24", "fd00:1::1/64")
	if got := readSysctl(t, n, "net/ipv4/ip_forward"); got != "1" {
		t.Errorf("ip_forward = %s, want 1", got)
	}
}
