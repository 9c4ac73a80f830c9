package bridge

import (
	"fmt"
	"sync"
	"testing"

	"github.com/vxbridge/vxbridge/internal/netdev"
)

func TestRetireLinkDeletesInTheBackground(t *testing.T) {
	m, n := newBridgeNS(t)
	h := n.Handle()
	if err := m.RetireLink("vxh0"); err != nil {
		t.Fatalf("RetireLink of a missing link: %v", err)
	}
	const count = 40
	for i := range count {
		cfg := testVethConfig()
		cfg.HostName, cfg.PeerName, cfg.MAC = fmt.Sprintf("vxh%d", i), fmt.Sprintf("vxp%d", i), nil
		if err := m.EnsureVeth(cfg); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, count)
	for i := range count {
		wg.Go(func() { errs[i] = m.RetireLink(fmt.Sprintf("vxh%d", i)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("RetireLink vxh%d: %v", i, err)
		}
	}
	m.Flush()
	for i := range count {
		requireGone(t, h, fmt.Sprintf("vxh%d", i), fmt.Sprintf("vxp%d", i))
	}
	mustLink(t, h, "vxb0") // the bridge is not in the group
}

// A link waiting for the reaper is never adopted: EnsureVeth of its name
// makes a fresh pair, which the reaper then leaves alone.
func TestEnsureVethReplacesRetiredLink(t *testing.T) {
	m, n := newBridgeNS(t)
	h := n.Handle()
	if err := m.EnsureVeth(testVethConfig()); err != nil {
		t.Fatal(err)
	}
	old := mustLink(t, h, "vxh0")
	// Retire it by hand, as RetireLink does, without waking the reaper.
	if err := h.LinkSetGroup(old, netdev.RetireGroup); err != nil {
		t.Fatal(err)
	}
	if err := m.EnsureVeth(testVethConfig()); err != nil {
		t.Fatal(err)
	}
	fresh := mustLink(t, h, "vxh0")
	if fresh.Attrs().Index == old.Attrs().Index || netdev.Retired(fresh) {
		t.Fatalf("EnsureVeth adopted the retired link (index %d, group %d)", fresh.Attrs().Index, fresh.Attrs().Group)
	}
	// The reaper, woken by another retirement, leaves the fresh pair alone.
	other := testVethConfig()
	other.HostName, other.PeerName, other.MAC = "vxh1", "vxp1", nil
	if err := m.EnsureVeth(other); err != nil {
		t.Fatal(err)
	}
	if err := m.RetireLink("vxh1"); err != nil {
		t.Fatal(err)
	}
	m.Flush()
	requireGone(t, h, "vxh1", "vxp1")
	if l := mustLink(t, h, "vxh0"); l.Attrs().Index != fresh.Attrs().Index {
		t.Errorf("vxh0 was replaced again")
	}
}

// A link is created in BuildGroup and leaves it once built; a crash in
// between leaves it there, and PurgeUnfinished deletes exactly those.
func TestBuildGroupMarksHalfBuiltLinks(t *testing.T) {
	m, n := newTestManager(t)
	h := n.Handle()
	// Every link vxbridge makes is born in BuildGroup: the kernel's first
	// word of it (its RTM_NEWLINK) already says so. A crash at any later
	// step leaves it marked; a link born in group 0 and moved there after
	// would be unmarked between the two requests.
	made := []string{"vxb0", "vxh0", "vxh1"}
	born := n.GroupsAtBirth(t, made, func() {
		if err := m.EnsureBridge(testBridgeConfig()); err != nil {
			t.Fatal(err)
		}
		if err := m.AddVeth(testVethConfig()); err != nil {
			t.Fatal(err)
		}
		cfg := testVethConfig()
		cfg.HostName, cfg.PeerName, cfg.Alias = "vxh1", "vxp1", "vxbridge:ep:test1"
		if err := m.EnsureVeth(cfg); err != nil {
			t.Fatal(err)
		}
	})
	for _, name := range made {
		if g, ok := born[name]; !ok || g != netdev.BuildGroup {
			t.Errorf("%s was born in group %#x (seen %v), want BuildGroup %#x", name, g, ok, netdev.BuildGroup)
		}
	}
	for _, name := range []string{"vxb0", "vxh0", "vxh1"} {
		if g := mustLink(t, h, name).Attrs().Group; g != 0 {
			t.Errorf("built %s is in group %#x, want 0", name, g)
		}
	}
	// What a crash right after creation leaves: no alias, still marked.
	half := foreignVeth("vxh9")
	half.Attrs().Group = netdev.BuildGroup
	addForeign(t, h, half, "")
	halfBridge := foreignBridge("vxb9")
	halfBridge.Attrs().Group = netdev.BuildGroup
	addForeign(t, h, halfBridge, "")
	addForeign(t, h, foreignVeth("other"), "") // not ours, group 0
	if err := m.PurgeUnfinished(); err != nil {
		t.Fatal(err)
	}
	requireGone(t, h, "vxh9", "vxh9p", "vxb9")
	for _, name := range []string{"vxb0", "vxh0", "vxp0", "other", "otherp"} {
		mustLink(t, h, name)
	}
	if err := m.PurgeUnfinished(); err != nil { // nothing to purge is fine
		t.Fatalf("PurgeUnfinished with nothing half-built: %v", err)
	}
}
