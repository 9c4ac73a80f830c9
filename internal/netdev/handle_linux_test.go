package netdev

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

// Kernel tier: every test works in a fresh namespace from nstest, which
// skips without root.

func add(t *testing.T, h Handle, l netlink.Link) netlink.Link {
	t.Helper()
	if err := h.LinkAdd(l); err != nil {
		t.Fatalf("add %s %q: %v", l.Type(), l.Attrs().Name, err)
	}
	return mustLookup(t, h, l.Attrs().Name)
}

func mustLookup(t *testing.T, h Handle, name string) netlink.Link {
	t.Helper()
	l, found, err := h.Lookup(name)
	if err != nil || !found {
		t.Fatalf("look up %q: found %t, %v", name, found, err)
	}
	return l
}

func veth(name string, group uint32) *netlink.Veth {
	return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, Group: group}, PeerName: name + "p"}
}

func TestLookupAndDelete(t *testing.T) {
	h := NewHandle(nstest.New(t).Handle())
	if l, found, err := h.Lookup("nothere"); l != nil || found || err != nil {
		t.Errorf("Lookup of a missing link = %v, %t, %v; want nil, false, nil", l, found, err)
	}
	if l, found, err := h.LookupIndex(4242); l != nil || found || err != nil {
		t.Errorf("LookupIndex of a missing link = %v, %t, %v; want nil, false, nil", l, found, err)
	}
	br := add(t, h, &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}})
	if l, found, err := h.LookupIndex(br.Attrs().Index); !found || err != nil || l.Attrs().Name != "br0" {
		t.Errorf("LookupIndex(%d) = %v, %t, %v; want br0", br.Attrs().Index, l, found, err)
	}
	if err := h.Delete(br); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := h.Lookup("br0"); found {
		t.Fatal("br0 still there after Delete")
	}
	if err := h.Delete(br); err != nil {
		t.Errorf("Delete of a link already gone: %v, want success", err)
	}
}

// The setters bring a link to what is asked, and once it is there they send
// nothing: a replay is free and harmless.
func TestSettersConverge(t *testing.T) {
	h := NewHandle(nstest.New(t).Handle())
	br := add(t, h, &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}})
	v := add(t, h, veth("v0", BuildGroup))
	steps := func(h Handle, v netlink.Link) error {
		return RunSteps(
			func() error { return h.SetAlias(v, ours) },
			func() error { return h.SetMTU(v, 1400) },
			func() error { return h.SetMaster(v, br) },
			func() error { return h.SetUp(v) },
			func() error { return h.SetBuilt(v) },
		)
	}
	// A handle on an empty namespace, where any request about v fails (no
	// such link): a setter that sends one is caught.
	empty := NewHandle(nstest.New(t).Handle())
	if err := steps(empty, v); err == nil {
		t.Fatal("setters on a link that lacks the settings sent nothing")
	}
	if err := steps(h, v); err != nil {
		t.Fatal(err)
	}
	got := mustLookup(t, h, "v0")
	a := got.Attrs()
	if a.Alias != ours || a.MTU != 1400 || a.MasterIndex != br.Attrs().Index || a.Flags&net.FlagUp == 0 || a.Group != 0 {
		t.Fatalf("after the setters: alias %q mtu %d master %d flags %v group %#x", a.Alias, a.MTU, a.MasterIndex, a.Flags, a.Group)
	}
	if err := steps(empty, got); err != nil {
		t.Errorf("setters on a converged link sent a request: %v", err)
	}
	if err := empty.SetMTU(got, 0); err != nil {
		t.Errorf("SetMTU(0) sent a request: %v", err)
	}
}

// nsHandle opens a handle on n's namespace.
func nsHandle(t *testing.T, n *nstest.NS) netns.NsHandle {
	t.Helper()
	var ns netns.NsHandle
	if err := n.Do(func() (err error) { ns, err = netns.Get(); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

func TestReaperDeletesItsGroup(t *testing.T) {
	n := nstest.New(t)
	h := NewHandle(n.Handle())
	sock, err := Socket(nsHandle(t, n))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	r := NewReaper(sock, RetireGroup, nil)
	add(t, h, veth("keep", 0))
	add(t, h, veth("half", BuildGroup))
	for _, name := range []string{"r0", "r1", "r2"} {
		l := add(t, h, veth(name, 0))
		if err := h.LinkSetGroup(l, RetireGroup); err != nil {
			t.Fatal(err)
		}
		r.Kick()
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"r0", "r0p", "r1", "r2p"} {
		if _, found, _ := h.Lookup(name); found {
			t.Errorf("retired %s still there after Flush", name)
		}
	}
	mustLookup(t, h, "keep")
	mustLookup(t, h, "half")
	if err := DeleteGroup(sock, BuildGroup); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := h.Lookup("half"); found {
		t.Error("DeleteGroup left a link of its group")
	}
	mustLookup(t, h, "keep")
	if err := DeleteGroup(sock, BuildGroup); err != nil {
		t.Errorf("DeleteGroup of an empty group: %v, want success", err)
	}
}

// A failed batch is reported as it happens and by the next Flush, once.
func TestReaperReportsFailure(t *testing.T) {
	n := nstest.New(t)
	sock, err := Socket(nsHandle(t, n))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	var failed atomic.Int32
	// The kernel refuses to delete group 0, the default one (EPERM).
	r := NewReaper(sock, 0, func(error) { failed.Add(1) })
	r.Kick()
	if err := r.Flush(); !errors.Is(err, unix.EPERM) {
		t.Fatalf("Flush after a failed batch: %v, want EPERM", err)
	}
	if failed.Load() != 1 {
		t.Errorf("failed heard of %d failures, want 1", failed.Load())
	}
	if err := r.Flush(); err != nil {
		t.Errorf("second Flush: %v, want the failure reported once", err)
	}
	mustLookup(t, NewHandle(n.Handle()), "lo")
}
