// Package nstest gives kernel-tier tests a fresh network namespace each, so
// they never touch the machine's own links, sysctls or firewall.
package nstest

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RequireRoot skips the test, saying why, unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel tier: needs root to create network namespaces (run `sudo make test`)")
	}
}

// NS is a throwaway network namespace with a netlink handle bound to it.
type NS struct {
	ns  netns.NsHandle
	nlh *netlink.Handle
}

// New creates a namespace with lo up; it is closed when the test ends.
func New(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("get current netns: %v", err)
	}
	defer orig.Close()
	ns, err := netns.New() // also switches this thread into it
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatalf("restore netns: %v", err)
	}
	nlh, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		t.Fatalf("netlink handle: %v", err)
	}
	n := &NS{ns: ns, nlh: nlh}
	if lo, err := nlh.LinkByName("lo"); err == nil {
		_ = nlh.LinkSetUp(lo)
	}
	t.Cleanup(func() {
		// Links of the namespace vanish with it: the last reference goes here.
		nlh.Close()
		ns.Close()
	})
	return n
}

// Handle is a netlink handle operating inside the namespace.
func (n *NS) Handle() *netlink.Handle { return n.nlh }

// NsHandle is a handle of the namespace (a link's target namespace, a
// Manager's), closed when the test ends.
func (n *NS) NsHandle(t testing.TB) netns.NsHandle {
	t.Helper()
	fd, err := unix.FcntlInt(uintptr(n.ns), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("duplicate namespace handle: %v", err)
	}
	h := netns.NsHandle(fd)
	t.Cleanup(func() { h.Close() })
	return h
}

// Do runs fn on an OS thread switched into the namespace. Processes fn
// starts (iptables, sysctl writes through /proc/sys/net) see the namespace.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never handed back to the scheduler: LockOSThread
		// without Unlock makes Go discard it when the goroutine exits, so a
		// thread left in the wrong namespace cannot leak into other code.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(n.ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// GroupsAtBirth runs do and returns the interface group each link of
// names had in the kernel's first notice of it (RTM_NEWLINK) in the
// namespace: what a link is born with, before any later request changes
// it. A name missing from the result was not seen made within 5 s.
func (n *NS) GroupsAtBirth(t testing.TB, names []string, do func()) map[string]uint32 {
	t.Helper()
	ns := n.NsHandle(t)
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{Namespace: &ns}); err != nil {
		t.Fatal(err)
	}
	do()
	born := map[string]uint32{}
	deadline := time.After(5 * time.Second)
	for len(born) < len(names) {
		select {
		case u := <-updates:
			name := u.Attrs().Name
			if _, seen := born[name]; !seen && u.Header.Type == unix.RTM_NEWLINK && slices.Contains(names, name) {
				born[name] = u.Attrs().Group
			}
		case <-deadline:
			return born
		}
	}
	return born
}

// MountNS makes a mount namespace that is not the test process's (as a
// managed plugin's container is not the host's) and returns a path to it:
// /proc/self/fd/N, open until the test ends. Its mounts propagate to no
// other namespace, and die with it.
func MountNS(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: Go ends the thread, which left our mount namespace
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			done <- result{-1, fmt.Errorf("unshare(CLONE_NEWNS): %w", err)}
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			done <- result{-1, fmt.Errorf("make / rprivate: %w", err)}
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		done <- result{fd, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("make a mount namespace: %v", r.err)
	}
	t.Cleanup(func() { unix.Close(r.fd) })
	return fmt.Sprintf("/proc/self/fd/%d", r.fd)
}
