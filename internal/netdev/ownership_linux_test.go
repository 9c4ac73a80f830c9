package netdev_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/internal/netdev"
	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
	"github.com/vxbridge/vxbridge/vxlan"
)

const ours = "vxbridge:net:test"

// Every link vxbridge makes, bridge, veth and VXLAN device, refuses the same
// two links found under its name through its package's own Ensure call: one
// with someone else's alias, and one half-built (in the build group, no alias
// yet: a crash interrupted its build). Both are named in a *NotOwnedError and
// left as they were.
func TestOwnershipIsTheSameForEveryLink(t *testing.T) {
	n := nstest.New(t)
	h := netdev.NewHandle(n.Handle())
	var ns netns.NsHandle
	if err := n.Do(func() (err error) { ns, err = netns.Get(); return err }); err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	// NewAt: every request of the Manager goes to the test's namespace.
	br, err := bridge.NewAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	if err := br.EnsureBridge(bridge.BridgeConfig{Name: "vxb0", Alias: ours}); err != nil {
		t.Fatal(err)
	}
	vx := vxlan.New(vxlan.Options{Handle: n.Handle()})
	vni := 100 // each VXLAN device made here has a VNI of its own
	kinds := []struct {
		kind   string
		make   func(name string, group uint32) netlink.Link // as someone else would
		ensure func(name string) error                      // as vxbridge does
	}{
		{"bridge",
			func(name string, group uint32) netlink.Link {
				return &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, Group: group}}
			},
			func(name string) error { return br.EnsureBridge(bridge.BridgeConfig{Name: name, Alias: ours}) }},
		{"veth",
			func(name string, group uint32) netlink.Link {
				return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, Group: group}, PeerName: name + "p"}
			},
			func(name string) error {
				return br.EnsureVeth(bridge.VethConfig{HostName: name, PeerName: name + "c", Bridge: "vxb0", Alias: ours})
			}},
		{"vxlan",
			func(name string, group uint32) netlink.Link {
				vni++
				return &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: name, Group: group}, VxlanId: vni, Port: 4789}
			},
			func(name string) error {
				return vx.EnsureDevice(vxlan.Device{Name: name, Alias: ours, VNI: 42, Port: 4789,
					Local: netip.MustParseAddr("192.0.2.1"), Bridge: "vxb0"})
			}},
	}
	found := []struct {
		prefix, alias string
		group         uint32
	}{
		{"f-", "someone:else", 0},     // foreign
		{"h-", "", netdev.BuildGroup}, // half-built
	}
	for _, k := range kinds {
		for _, f := range found {
			name := f.prefix + k.kind
			before := addAs(t, h, k.make(name, f.group), f.alias)
			err := k.ensure(name)
			var no *netdev.NotOwnedError
			if !errors.As(err, &no) || *no != (netdev.NotOwnedError{Name: name, Kind: k.kind, Alias: f.alias}) {
				t.Errorf("ensure %s over %s (alias %q, group %#x): %v, want a *NotOwnedError naming it",
					k.kind, name, f.alias, f.group, err)
			}
			after, ok, err := h.Lookup(name)
			if err != nil || !ok {
				t.Fatalf("%s gone after a refused ensure: %v", name, err)
			}
			if a, b := after.Attrs(), before.Attrs(); a.Index != b.Index || a.Alias != b.Alias || a.Group != b.Group ||
				a.MasterIndex != b.MasterIndex || a.Flags != b.Flags {
				t.Errorf("%s changed by a refused ensure: %+v, was %+v", name, a, b)
			}
		}
	}
}

// addAs creates l with alias (none if "") and returns it as read back.
func addAs(t *testing.T, h netdev.Handle, l netlink.Link, alias string) netlink.Link {
	t.Helper()
	if err := h.LinkAdd(l); err != nil {
		t.Fatalf("add %s %q: %v", l.Type(), l.Attrs().Name, err)
	}
	got, _, err := h.Lookup(l.Attrs().Name)
	if err == nil && alias != "" {
		err = h.LinkSetAlias(got, alias)
		got, _, _ = h.Lookup(l.Attrs().Name)
	}
	if err != nil {
		t.Fatal(err)
	}
	return got
}
