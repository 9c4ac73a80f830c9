package bridge

import (
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

// Kernel tier: every test runs in its own namespace from nstest, which
// skips without root. Links vanish with the namespace.

const (
	netAlias = "vxbridge:net:test"
	epAlias  = "vxbridge:ep:test"
)

// newTestManager returns a Manager working in a fresh namespace (netlink and
// sysctls alike) and that namespace, for checking what it did.
func newTestManager(t *testing.T) (*Manager, *nstest.NS) {
	t.Helper()
	n := nstest.New(t)
	var ns netns.NsHandle
	if err := n.Do(func() (err error) { ns, err = netns.Get(); return err }); err != nil {
		t.Fatalf("namespace handle: %v", err)
	}
	defer ns.Close()
	m, err := NewAt(ns)
	if err != nil {
		t.Fatalf("NewAt: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m, n
}

// vethWays names the two ways of making a veth pair, for vethMaker.
var vethWays = []string{"EnsureVeth", "AddVeth"}

func vethMaker(m *Manager, way string) func(VethConfig) error {
	if way == "AddVeth" {
		return m.AddVeth
	}
	return m.EnsureVeth
}

func mustLink(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %q: %v", name, err)
	}
	return l
}

func requireGone(t *testing.T, h *netlink.Handle, names ...string) {
	t.Helper()
	for _, name := range names {
		if l, err := h.LinkByName(name); err == nil {
			t.Errorf("link %q (%s) still exists", name, l.Type())
		}
	}
}

// addForeign creates a link vxbridge did not make, with alias if not "".
func addForeign(t *testing.T, h *netlink.Handle, l netlink.Link, alias string) netlink.Link {
	t.Helper()
	if err := h.LinkAdd(l); err != nil {
		t.Fatalf("add %s %q: %v", l.Type(), l.Attrs().Name, err)
	}
	l = mustLink(t, h, l.Attrs().Name)
	if alias != "" {
		if err := h.LinkSetAlias(l, alias); err != nil {
			t.Fatalf("alias: %v", err)
		}
	}
	return mustLink(t, h, l.Attrs().Name)
}

// The test machine's kernel has no dummy driver: foreign non-bridge links
// are veths, foreign bridges are bridges.

func foreignVeth(name string) netlink.Link {
	return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
}

func foreignBridge(name string) netlink.Link {
	return &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
}

// addrsOf returns the link's addresses, link-local ones included.
func addrsOf(t *testing.T, h *netlink.Handle, name string) map[netip.Prefix]netlink.Addr {
	t.Helper()
	list, err := h.AddrList(mustLink(t, h, name), netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("addresses of %q: %v", name, err)
	}
	got := make(map[netip.Prefix]netlink.Addr)
	for _, a := range list {
		if p, ok := prefixOf(a.IPNet); ok {
			got[p] = a
		}
	}
	return got
}

func requireAddrs(t *testing.T, h *netlink.Handle, name string, want ...string) {
	t.Helper()
	got := addrsOf(t, h, name)
	var global []string
	for p := range got {
		if !p.Addr().IsLinkLocalUnicast() {
			global = append(global, p.String())
		}
	}
	slices.Sort(global)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(global, want) {
		t.Errorf("addresses of %q: %v, want %v", name, global, want)
	}
}

// readSysctl reads /proc/sys/<key> inside the namespace.
func readSysctl(t *testing.T, n *nstest.NS, key string) string {
	t.Helper()
	var v []byte
	if err := n.Do(func() (err error) { v, err = os.ReadFile("/proc/sys/" + key); return err }); err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return strings.TrimSpace(string(v))
}

func writeSysctl(t *testing.T, n *nstest.NS, key, value string) {
	t.Helper()
	if err := n.Do(func() error { return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644) }); err != nil {
		t.Fatalf("write %s: %v", key, err)
	}
}

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}
