package vxlan

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/internal/netdev"
	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

const testAlias = "vxbridge:net:test"

// nsFd returns a handle on ns usable as a link's target namespace.
func nsFd(t *testing.T, ns *nstest.NS) netns.NsHandle {
	t.Helper()
	var h netns.NsHandle
	if err := ns.Do(func() (err error) { h, err = netns.Get(); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// vethTo makes a veth pair: name in ns, peer in other, each with addrs.
func vethTo(t *testing.T, ns *nstest.NS, name string, other *nstest.NS, peer string, mtu int) {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = name, mtu
	must(t, ns.Handle().LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: peer, PeerMTU: uint32(mtu), PeerNamespace: netlink.NsFd(nsFd(t, other))}))
}

func linkUp(t *testing.T, ns *nstest.NS, name string, addrs ...string) netlink.Link {
	t.Helper()
	l, err := ns.Handle().LinkByName(name)
	must(t, err)
	for _, a := range addrs {
		addr, err := netlink.ParseAddr(a)
		must(t, err)
		addr.Flags = unix.IFA_F_NODAD
		must(t, ns.Handle().AddrAdd(l, addr))
	}
	must(t, ns.Handle().LinkSetUp(l))
	return l
}

type testHost struct {
	host, ctr *nstest.NS
	// net is where the bridge and the VXLAN device live: host, or a
	// namespace of the network's own (newTestHostOwnNS).
	net  *nstest.NS
	m    *Manager
	vtep netip.Addr
	mac  net.HardwareAddr // the container's
	ips  []netip.Addr
	dev  Device
}

// newTestHost is a host namespace with a bridge and one "container"
// namespace on it (eth0 with ctrIPs), and an underlay veth ul0 to be joined.
func newTestHost(t *testing.T, vtep string, ctrIPs ...string) *testHost {
	host := nstest.New(t)
	return newTestHostIn(t, host, host, vtep, ctrIPs...)
}

// newTestHostOwnNS is newTestHost with the bridge, the container's host
// end and the VXLAN device in a namespace of their own, the underlay in the
// host's: the device is created in the host's namespace and moved.
func newTestHostOwnNS(t *testing.T, vtep string, ctrIPs ...string) *testHost {
	return newTestHostIn(t, nstest.New(t), nstest.New(t), vtep, ctrIPs...)
}

func newTestHostIn(t *testing.T, host, netNS *nstest.NS, vtep string, ctrIPs ...string) *testHost {
	h := &testHost{host: host, net: netNS, ctr: nstest.New(t), vtep: netip.MustParseAddr(vtep)}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", MTU: 1450}}
	must(t, h.net.Handle().LinkAdd(br))
	linkUp(t, h.net, "br0")
	vethTo(t, h.net, "vh0", h.ctr, "eth0", 1450)
	vh, err := h.net.Handle().LinkByName("vh0")
	must(t, err)
	must(t, h.net.Handle().LinkSetMaster(vh, br))
	linkUp(t, h.net, "vh0")
	var cidrs []string
	for _, ip := range ctrIPs {
		h.ips = append(h.ips, netip.MustParsePrefix(ip).Addr())
		cidrs = append(cidrs, ip)
	}
	eth0 := linkUp(t, h.ctr, "eth0", cidrs...)
	h.mac = eth0.Attrs().HardwareAddr
	netFd := nsFd(t, h.net)
	opts := Options{Handle: h.net.Handle(), InNetNS: h.net.Do, Namespace: &netFd}
	if h.net != h.host {
		opts.Create, opts.NetNS = h.host.Handle(), int(nsFd(t, h.net))
	}
	h.m = New(opts)
	h.dev = Device{Name: DeviceName(42), Alias: testAlias, VNI: 42, Port: DefaultPort, Local: h.vtep, Parent: "ul0", MTU: 1450, Bridge: "br0"}
	return h
}

func ping(ns *nstest.NS, addr string) error {
	return ns.Do(func() error {
		out, err := exec.Command("ping", "-c", "1", "-W", "2", addr).CombinedOutput()
		if err != nil {
			return errors.New(strings.TrimSpace(string(out)))
		}
		return nil
	})
}

// TestDataPlane proves the model: two hosts joined by an underlay veth, a
// VXLAN device each with learning off, and containers that reach each other
// only through the FDB and neighbour entries Sync writes.
func TestDataPlane(t *testing.T) {
	testDataPlane(t, newTestHost)
}

// The same with each host's bridge and VXLAN device in a namespace of the
// network's own: the device's UDP socket stays on the host's underlay.
func TestDataPlaneOwnNamespace(t *testing.T) {
	testDataPlane(t, newTestHostOwnNS)
}

func testDataPlane(t *testing.T, newHost func(*testing.T, string, ...string) *testHost) {
	nstest.RequireRoot(t)
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("ping not installed (apt-get install iputils-ping)")
	}
	a := newHost(t, "192.0.2.1", "10.9.0.1/24", "fd09::1/64")
	b := newHost(t, "192.0.2.2", "10.9.0.2/24", "fd09::2/64")
	vethTo(t, a.host, "ul0", b.host, "ul0", 1500)
	linkUp(t, a.host, "ul0", "192.0.2.1/24")
	linkUp(t, b.host, "ul0", "192.0.2.2/24")

	for _, h := range []*testHost{a, b} {
		must(t, h.m.EnsureDevice(h.dev))
		first, err := h.net.Handle().LinkByName(h.dev.Name)
		must(t, err)
		must(t, h.m.EnsureDevice(h.dev)) // idempotent: the same device
		again, err := h.net.Handle().LinkByName(h.dev.Name)
		must(t, err)
		if again.Attrs().Index != first.Attrs().Index {
			t.Fatalf("a second EnsureDevice re-created the device")
		}
		if h.net != h.host {
			if _, err := h.host.Handle().LinkByName(h.dev.Name); err == nil {
				t.Fatalf("device %s is in the host's namespace, want the network's", h.dev.Name)
			}
		}
	}
	if err := ping(a.ctr, "10.9.0.2"); err == nil {
		t.Fatal("ping across before any entry was written: the device floods or learns")
	}
	sync := func(h, peer *testHost) Table {
		want := Desired([]Peer{{MAC: peer.mac, IPs: peer.ips, VTEP: peer.vtep}})
		c, err := h.m.Sync(h.dev.Name, want)
		must(t, err)
		if len(c.SetFDB) != 1 || len(c.SetNeigh) != 2 {
			t.Fatalf("first sync changes: %+v", c)
		}
		got, err := h.m.Entries(h.dev.Name)
		must(t, err)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("entries after sync:\n got %+v\nwant %+v", got, want)
		}
		if c, err := h.m.Sync(h.dev.Name, want); err != nil || !c.Empty() {
			t.Fatalf("second sync: %+v, %v", c, err)
		}
		return want
	}
	sync(a, b)
	sync(b, a)
	for _, dst := range []string{"10.9.0.2", "fd09::2"} {
		// Retried: the negative check above may have left the container's
		// neighbour entry resolving, and its last probe may have gone out
		// before the entries existed.
		var err error
		for deadline := time.Now().Add(8 * time.Second); time.Now().Before(deadline); {
			if err = ping(a.ctr, dst); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("ping %s across the vxlan: %v", dst, err)
		}
	}
	// The peer leaves: its entries go, and it is unreachable again.
	c, err := a.m.Sync(a.dev.Name, Table{})
	must(t, err)
	if len(c.DelFDB) != 1 || len(c.DelNeigh) != 2 {
		t.Fatalf("removal changes: %+v", c)
	}
	if got, err := a.m.Entries(a.dev.Name); err != nil || len(got.FDB)+len(got.Neigh) != 0 {
		t.Fatalf("entries after removal: %+v, %v", got, err)
	}
	if err := a.m.Apply(a.dev.Name, c); err != nil {
		t.Fatalf("replaying a delete: %v", err)
	}
}

func TestEnsureDevice(t *testing.T) {
	h := newTestHost(t, "192.0.2.1", "10.9.0.1/24")
	la := netlink.NewLinkAttrs()
	la.Name = "ul0"
	must(t, h.host.Handle().LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "ul0p"}))
	linkUp(t, h.host, "ul0", "192.0.2.1/24")

	// Born in BuildGroup, as the kernel first tells of it: a crash before
	// its alias is set leaves it marked half-built.
	born := h.host.GroupsAtBirth(t, []string{h.dev.Name}, func() { must(t, h.m.EnsureDevice(h.dev)) })
	if g, ok := born[h.dev.Name]; !ok || g != netdev.BuildGroup {
		t.Fatalf("device born in group %#x (seen %v), want BuildGroup", g, ok)
	}
	check := func(port int) *netlink.Vxlan {
		t.Helper()
		l, err := h.host.Handle().LinkByName(h.dev.Name)
		must(t, err)
		v, ok := l.(*netlink.Vxlan)
		if !ok {
			t.Fatalf("%s is a %s", h.dev.Name, l.Type())
		}
		br, _ := h.host.Handle().LinkByName("br0")
		switch {
		case v.VxlanId != 42 || v.Port != port || v.Learning || !v.Proxy:
			t.Fatalf("device: vni %d port %d learning %t proxy %t", v.VxlanId, v.Port, v.Learning, v.Proxy)
		case v.MTU != 1450 || v.Alias != testAlias || v.MasterIndex != br.Attrs().Index || v.Flags&net.FlagUp == 0:
			t.Fatalf("device: mtu %d alias %q master %d up %t", v.MTU, v.Alias, v.MasterIndex, v.Flags&net.FlagUp != 0)
		case !v.SrcAddr.Equal(net.ParseIP("192.0.2.1")):
			t.Fatalf("device: local %s", v.SrcAddr)
		case v.Attrs().Group != 0:
			t.Fatalf("device: built, yet still in interface group %#x", v.Attrs().Group)
		}
		return v
	}
	first := check(DefaultPort)
	// A changed fixed attribute re-creates the device.
	h.dev.Port = 8472
	must(t, h.m.EnsureDevice(h.dev))
	if second := check(8472); second.Index == first.Index {
		t.Fatal("port change did not re-create the device")
	}
	// Port isolation (icc=false) follows the config, both ways, in place.
	for _, iso := range []bool{true, false} {
		h.dev.Isolated = iso
		must(t, h.m.EnsureDevice(h.dev))
		l := check(8472)
		pi, err := h.host.Handle().LinkGetProtinfo(l)
		must(t, err)
		if pi.Isolated != iso {
			t.Fatalf("isolated = %t after EnsureDevice with Isolated %t", pi.Isolated, iso)
		}
	}
	// A foreign link with the name is refused and left alone.
	must(t, h.m.DeleteDevice(h.dev.Name, testAlias))
	if _, err := h.host.Handle().LinkByName(h.dev.Name); err == nil {
		t.Fatal("device still there after DeleteDevice")
	}
	must(t, h.m.DeleteDevice(h.dev.Name, testAlias)) // already gone: success
	la = netlink.NewLinkAttrs()
	la.Name = h.dev.Name
	must(t, h.host.Handle().LinkAdd(&netlink.Bridge{LinkAttrs: la}))
	if err := h.m.EnsureDevice(h.dev); !errors.Is(err, netdev.ErrNotOwned) {
		t.Fatalf("EnsureDevice over a foreign link: %v, want ErrNotOwned", err)
	}
	if err := h.m.DeleteDevice(h.dev.Name, testAlias); !errors.Is(err, netdev.ErrNotOwned) {
		t.Fatalf("DeleteDevice of a foreign link: %v, want ErrNotOwned", err)
	}
	// A missing bridge is an error naming it, leaving nothing behind.
	must(t, h.host.Handle().LinkDel(&netlink.Bridge{LinkAttrs: la}))
	h.dev.Bridge = "nobr0"
	if err := h.m.EnsureDevice(h.dev); err == nil || !strings.Contains(err.Error(), "nobr0") {
		t.Fatalf("EnsureDevice without its bridge: %v", err)
	}
	if _, err := h.host.Handle().LinkByName(h.dev.Name); err == nil {
		t.Fatal("device left behind")
	}
}

func TestEnsureNeighLimits(t *testing.T) {
	dir := t.TempDir()
	for _, fam := range []string{"ipv4", "ipv6"} {
		d := filepath.Join(dir, "net", fam, "neigh/default")
		must(t, os.MkdirAll(d, 0o755))
		for i, v := range []string{"256", "1024", "2048"} {
			must(t, os.WriteFile(filepath.Join(d, "gc_thresh"+string(rune('1'+i))), []byte(v+"\n"), 0o644))
		}
	}
	m := New(Options{ProcSys: dir})
	if before, changed, err := m.EnsureNeighLimits(10); err != nil || changed || before.Thresh3 != 2048 {
		t.Fatalf("small table: %+v %t %v", before, changed, err)
	}
	if _, changed, err := m.EnsureNeighLimits(5000); err != nil || !changed {
		t.Fatalf("large table: %t %v", changed, err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "net/ipv6/neigh/default/gc_thresh3"))
	if strings.TrimSpace(string(b)) != "6024" /* 5000 + headroom */ {
		t.Fatalf("ipv6 gc_thresh3 = %q, want 6024", b)
	}
	// Where the kernel hides the limits (any namespace but the first), it warns.
	m = New(Options{ProcSys: t.TempDir()})
	if _, changed, err := m.EnsureNeighLimits(5000); err != nil || changed {
		t.Fatalf("hidden limits: %t %v", changed, err)
	}
}

func TestResolveVTEP(t *testing.T) {
	ns := nstest.New(t)
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = "ul0", 1400
	must(t, ns.Handle().LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "ul0p"}))
	linkUp(t, ns, "ul0p")
	ul := linkUp(t, ns, "ul0", "192.0.2.5/24", "2001:db8::5/64")
	m := New(Options{Handle: ns.Handle()})
	if _, err := m.ResolveVTEP("", ""); err == nil || !strings.Contains(err.Error(), "--vtep-interface") {
		t.Fatalf("no default route: %v", err)
	}
	must(t, ns.Handle().RouteAdd(&netlink.Route{LinkIndex: ul.Attrs().Index, Gw: net.ParseIP("192.0.2.1")}))
	want := VTEP{Interface: "ul0", Addr: netip.MustParseAddr("192.0.2.5"), MTU: 1400}
	for _, c := range [][2]string{{"", ""}, {"ul0", ""}, {"", "192.0.2.5"}, {"ul0", "192.0.2.5"}} {
		got, err := m.ResolveVTEP(c[0], c[1])
		if err != nil || got != want {
			t.Errorf("ResolveVTEP(%q, %q) = %+v, %v", c[0], c[1], got, err)
		}
	}
	if got, err := m.ResolveVTEP("", "2001:db8::5"); err != nil || got.Addr != netip.MustParseAddr("2001:db8::5") {
		t.Errorf("IPv6 VTEP: %+v, %v", got, err)
	}
	for _, c := range [][2]string{{"nosuch0", ""}, {"", "198.51.100.1"}, {"", "bogus"}, {"lo", "192.0.2.5"}} {
		if _, err := m.ResolveVTEP(c[0], c[1]); err == nil {
			t.Errorf("ResolveVTEP(%q, %q) accepted", c[0], c[1])
		}
	}
}
