package namespace

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel tier: needs root. Every test works in its own t.TempDir, deletes
// every namespace it made (also on failure) and then checks that nothing is
// left mounted under that directory.

// newDir skips without root and returns a Dir in a fresh temporary
// directory; sub, when not empty, is a not yet existing subdirectory.
func newDir(t *testing.T, sub string) Dir {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel tier: needs root to create network namespaces and mounts")
	}
	tmp := t.TempDir() // its removal runs after the cleanups below
	t.Cleanup(func() {
		if m := mountsUnder(t, tmp); len(m) > 0 {
			t.Errorf("mounts left under %s: %q", tmp, m)
		}
	})
	return Dir{Path: filepath.Join(tmp, sub)}
}

// mountsUnder returns the mount points at or below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/thread-self/mountinfo") // not self: a discarded main thread may sit elsewhere
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			found = append(found, fields[4])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	return found
}

// ensure calls d.Ensure and arranges for the handle to be closed and the
// namespace deleted when the test ends, whatever happens in between.
func ensure(t *testing.T, d Dir, name string) (netns.NsHandle, bool) {
	t.Helper()
	t.Cleanup(func() {
		if err := d.Delete(name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	h, created, err := d.Ensure(name)
	if err != nil {
		t.Fatalf("Ensure(%q): %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	return h, created
}

// open calls d.Open, failing the test unless the namespace is found.
func open(t *testing.T, d Dir, name string) netns.NsHandle {
	t.Helper()
	h, found, err := d.Open(name)
	if err != nil || !found {
		t.Fatalf("Open(%q) = found %v, %v; want found", name, found, err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// inode returns the device and inode of a namespace handle: equal pairs are
// the same namespace.
func inode(t *testing.T, h netns.NsHandle) [2]uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		t.Fatalf("fstat handle %d: %v", h, err)
	}
	return [2]uint64{st.Dev, st.Ino}
}

// selfNS returns a handle to the namespace of the calling thread, which is
// the test process's: no test leaves a thread switched. (Not
// /proc/self/ns/net: that is the main thread's, and a thread Do discards
// after a failed switch back may be the main thread, parked in the
// namespace.)
func selfNS(t *testing.T) netns.NsHandle {
	t.Helper()
	h, err := netns.GetFromPath("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatalf("own namespace: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestEnsureCreatesThenFinds(t *testing.T) {
	d := newDir(t, "netns") // Ensure creates it
	h1, created := ensure(t, d, "n1")
	if !created {
		t.Fatal("first Ensure: created = false, want true")
	}
	if fi, err := os.Stat(d.Path); err != nil || !fi.IsDir() {
		t.Fatalf("Dir.Path after Ensure: %v, %v", fi, err)
	}
	if ok, err := IsNamespace(filepath.Join(d.Path, "n1")); !ok || err != nil {
		t.Fatalf("IsNamespace after Ensure = %v, %v; want true", ok, err)
	}
	h2, created := ensure(t, d, "n1")
	if created {
		t.Fatal("second Ensure: created = true, want false")
	}
	h3 := open(t, d, "n1")
	if a, b, c := inode(t, h1), inode(t, h2), inode(t, h3); a != b || a != c {
		t.Fatalf("handles differ: Ensure %v, Ensure again %v, Open %v", a, b, c)
	}
	if inode(t, h1) == inode(t, selfNS(t)) {
		t.Fatal("Ensure returned the process's own namespace")
	}
}

func TestLinkInsideVisibleThroughOpenOnly(t *testing.T) {
	d := newDir(t, "")
	_, hostErr := netlink.LinkByName("d0")
	h, _ := ensure(t, d, "links")
	nlh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink handle in namespace: %v", err)
	}
	defer nlh.Close()
	// A bridge, not a dummy: some kernels (this VM's) lack the dummy driver.
	if err := nlh.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "d0"}}); err != nil {
		t.Fatalf("add bridge d0 in namespace: %v", err)
	}

	nlh2, err := netlink.NewHandleAt(open(t, d, "links"))
	if err != nil {
		t.Fatalf("netlink handle through Open: %v", err)
	}
	defer nlh2.Close()
	if _, err := nlh2.LinkByName("d0"); err != nil {
		t.Fatalf("d0 through a handle from Open: %v", err)
	}
	if hostErr != nil { // the test process's namespace had no d0 before
		if _, err := netlink.LinkByName("d0"); err == nil {
			t.Fatal("d0 appeared in the test process's own namespace")
		}
	}
}

func TestEnsureOnLeftoverFile(t *testing.T) {
	d := newDir(t, "")
	path := filepath.Join(d.Path, "left")
	// A crash between creating the file and the bind mount leaves this.
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if ok, err := IsNamespace(path); ok || err != nil {
		t.Fatalf("IsNamespace(plain file) = %v, %v; want false, nil", ok, err)
	}
	if _, found, err := d.Open("left"); found || err != nil {
		t.Fatalf("Open(plain file) = found %v, %v; want not found, nil", found, err)
	}
	h, created := ensure(t, d, "left")
	if !created {
		t.Fatal("Ensure on a leftover file: created = false, want true")
	}
	if ok, err := IsNamespace(path); !ok || err != nil {
		t.Fatalf("IsNamespace after Ensure = %v, %v; want true", ok, err)
	}
	if inode(t, h) != inode(t, open(t, d, "left")) {
		t.Fatal("Open after Ensure on a leftover file finds another namespace")
	}
}

func TestEnsureRefusesSymlink(t *testing.T) {
	d := newDir(t, "")
	target := filepath.Join(d.Path, "target")
	if err := os.WriteFile(target, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(d.Path, "link")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) }) // only if the test fails
	if _, _, err := d.Ensure("link"); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("Ensure on a symlink = %v, want a symlink error", err)
	}
	if ok, _ := IsNamespace(target); ok {
		t.Fatal("Ensure mounted a namespace on the symlink's target")
	}
	if err := d.Delete("link"); err != nil {
		t.Fatalf("Delete(symlink): %v", err)
	}
	if _, err := os.Lstat(filepath.Join(d.Path, "link")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("symlink after Delete: %v, want gone", err)
	}
	if _, err := os.Stat(target); err != nil {
		t.Fatalf("symlink target after Delete: %v, want untouched", err)
	}
}

func TestDeleteMissingOrUnmounted(t *testing.T) {
	d := newDir(t, "")
	if err := d.Delete("missing"); err != nil {
		t.Fatalf("Delete(missing file): %v", err)
	}
	if err := (Dir{Path: filepath.Join(d.Path, "nodir")}).Delete("x"); err != nil {
		t.Fatalf("Delete in a missing directory: %v", err)
	}
	path := filepath.Join(d.Path, "plain")
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete("plain"); err != nil {
		t.Fatalf("Delete(unmounted file): %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("unmounted file after Delete: %v, want gone", err)
	}
}

func TestDelete(t *testing.T) {
	d := newDir(t, "")
	h, _ := ensure(t, d, "gone")
	if err := d.Delete("gone"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, found, err := d.Open("gone"); found || err != nil {
		t.Fatalf("Open after Delete = found %v, %v; want not found, nil", found, err)
	}
	if _, err := os.Lstat(filepath.Join(d.Path, "gone")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file after Delete: %v, want gone", err)
	}
	// The open handle still keeps the namespace alive.
	if err := Do(h, func() error { return nil }); err != nil {
		t.Fatalf("Do with a handle kept across Delete: %v", err)
	}
	if err := d.Delete("gone"); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

func TestDeleteStackedMounts(t *testing.T) {
	d := newDir(t, "")
	ensure(t, d, "stack")
	// What two unserialised Ensures of one name can leave.
	path := filepath.Join(d.Path, "stack")
	if err := mountNew(nil, path); err != nil {
		t.Fatalf("second mount: %v", err)
	}
	if n := len(mountsUnder(t, path)); n != 2 {
		t.Fatalf("%d mounts on %s, want 2", n, path)
	}
	if err := d.Delete("stack"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if m := mountsUnder(t, path); len(m) != 0 {
		t.Fatalf("mounts after Delete: %q", m)
	}
}

func TestList_Mounted(t *testing.T) {
	d := newDir(t, "")
	for _, n := range []string{"vxb-b", "other", "vxb-a"} {
		ensure(t, d, n)
	}
	if err := os.WriteFile(filepath.Join(d.Path, "vxb-c"), nil, 0o444); err != nil { // unmounted leftover
		t.Fatal(err)
	}
	got, err := d.List("vxb-")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if want := []string{"vxb-a", "vxb-b", "vxb-c"}; !slices.Equal(got, want) {
		t.Fatalf("List(vxb-) = %q, want %q", got, want)
	}
	if err := d.Delete("vxb-c"); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentNames(t *testing.T) {
	d := newDir(t, "")
	const n = 8
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("c%d", i)
		t.Cleanup(func() { _ = d.Delete(names[i]) })
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, name := range names {
		wg.Go(func() {
			h, created, err := d.Ensure(name)
			if err == nil {
				h.Close()
				if !created {
					err = errors.New("created = false")
				}
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Ensure: %v", err)
	}
	for i, name := range names {
		wg.Go(func() { errs[i] = d.Delete(name) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Delete: %v", err)
	}
	if got, err := d.List(""); len(got) != 0 || err != nil {
		t.Fatalf("List after Delete = %q, %v; want empty", got, err)
	}
}

// sysctlsIn reads /proc/sys files from inside h; a missing file is left
// out.
func sysctlsIn(t *testing.T, h netns.NsHandle, paths ...string) map[string]string {
	t.Helper()
	var got map[string]string
	if err := Do(h, func() (err error) { got, err = readFiles(paths); return err }); err != nil {
		t.Fatalf("read sysctls in namespace: %v", err)
	}
	return got
}

func TestPrepare(t *testing.T) {
	d := newDir(t, "")
	h, _ := ensure(t, d, "prep")

	const nfIPT = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	nf, checkBridge := sysctlsIn(t, h, nfIPT)[nfIPT]
	if !checkBridge {
		if out, err := exec.Command("modprobe", "br_netfilter").CombinedOutput(); err != nil {
			t.Logf("modprobe br_netfilter: %v: %s", err, out)
		}
		nf, checkBridge = sysctlsIn(t, h, nfIPT)[nfIPT]
	}
	if !checkBridge {
		t.Log("no br_netfilter: not checking bridge-nf-call-*")
	} else if nf != "1" {
		t.Logf("bridge-nf-call-iptables in a fresh namespace is %q, expected the default 1", nf)
	}

	hostPaths := []string{nfIPT, "/proc/sys/net/ipv6/conf/default/addr_gen_mode"}
	hostBefore := hostFiles(t, hostPaths)
	for i := range 2 { // the second call finds everything set
		if err := Prepare(h); err != nil {
			t.Fatalf("Prepare (call %d): %v", i+1, err)
		}
	}
	checkPrepared(t, h, checkBridge)
	if hostAfter := hostFiles(t, hostPaths); !maps.Equal(hostBefore, hostAfter) {
		t.Errorf("Prepare changed the test process's own sysctls: %v, was %v", hostAfter, hostBefore)
	}

	// What a reconciler repairs: br_netfilter loaded after the first
	// Prepare (its default is 1), lo taken down.
	if err := Do(h, func() error {
		if checkBridge {
			if err := os.WriteFile(nfIPT, []byte("1"), 0o644); err != nil {
				return err
			}
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetDown(lo); err != nil {
			return err
		}
		if lo, err = netlink.LinkByName("lo"); err == nil && lo.Attrs().Flags&net.FlagUp != 0 {
			err = errors.New("lo still up")
		}
		return err
	}); err != nil {
		t.Fatalf("undo part of Prepare: %v", err)
	}
	if err := Prepare(h); err != nil {
		t.Fatalf("Prepare again: %v", err)
	}
	checkPrepared(t, h, checkBridge)
}

// readFiles reads files in the calling thread's namespace; a missing file
// is left out. (No t: it also runs inside Do, on another goroutine.)
func readFiles(paths []string) (map[string]string, error) {
	got := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		got[p] = strings.TrimSpace(string(b))
	}
	return got, nil
}

// hostFiles reads files in the test process's namespace: no test leaves a
// thread switched.
func hostFiles(t *testing.T, paths []string) map[string]string {
	t.Helper()
	got, err := readFiles(paths)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// checkPrepared fails the test unless h looks as Prepare leaves it.
func checkPrepared(t *testing.T, h netns.NsHandle, checkBridge bool) {
	t.Helper()
	want := map[string]string{}
	if _, ok := sysctlsIn(t, h, "/proc/sys/net/ipv6/conf/all/disable_ipv6")["/proc/sys/net/ipv6/conf/all/disable_ipv6"]; ok {
		for _, s := range ipv6Sysctls {
			want[s.path] = s.value
		}
	} else {
		t.Log("no IPv6 in this kernel: not checking addr_gen_mode")
	}
	if checkBridge {
		for _, s := range bridgeSysctls {
			want[s.path] = s.value
		}
	}
	got := sysctlsIn(t, h, slices.Collect(maps.Keys(want))...)
	for p, v := range want {
		if got[p] != v {
			t.Errorf("%s in namespace = %q, want %q", p, got[p], v)
		}
	}

	nlh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink handle in namespace: %v", err)
	}
	defer nlh.Close()
	lo, err := nlh.LinkByName("lo")
	if err != nil {
		t.Fatalf("lo in namespace: %v", err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("lo in namespace is down after Prepare (flags %v)", lo.Attrs().Flags)
	}
}

func TestDo(t *testing.T) {
	d := newDir(t, "")
	h, _ := ensure(t, d, "do")
	before, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	errFn := errors.New("fn failed")
	err = Do(h, func() error {
		var err error
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		if err != nil {
			return err
		}
		return errFn
	})
	if !errors.Is(err, errFn) {
		t.Fatalf("Do = %v, want fn's error", err)
	}
	if want := fmt.Sprintf("net:[%d]", inode(t, h)[1]); inside != want {
		t.Fatalf("fn ran in %s, want %s", inside, want)
	}
	if inside == before {
		t.Fatalf("fn ran in the caller's namespace %s", before)
	}
	if after, _ := os.Readlink("/proc/thread-self/ns/net"); after != before {
		t.Fatalf("caller's thread moved from %s to %s", before, after)
	}

	ran := false
	if err := Do(netns.None(), func() error { ran = true; return nil }); err == nil || ran {
		t.Fatalf("Do with a closed handle = %v, fn ran %v; want an error, fn not run", err, ran)
	}
}

func TestIsNamespace(t *testing.T) {
	d := newDir(t, "")
	for path, want := range map[string]bool{
		"/proc/self/ns/net":              true,
		"/proc/self/ns/mnt":              false, // nsfs, but not a network namespace
		filepath.Join(d.Path, "missing"): false,
		d.Path:                           false,
	} {
		if got, err := IsNamespace(path); got != want || err != nil {
			t.Errorf("IsNamespace(%s) = %v, %v; want %v, nil", path, got, err, want)
		}
	}
}

func TestOpenRefusesOtherNamespaceKind(t *testing.T) {
	d := newDir(t, "")
	path := filepath.Join(d.Path, "uts")
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Delete("uts"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := unix.Mount("/proc/self/ns/uts", path, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount a UTS namespace: %v", err)
	}
	if _, found, err := d.Open("uts"); err == nil || found {
		t.Fatalf("Open(UTS namespace) = found %v, %v; want an error", found, err)
	}
	if _, _, err := d.Ensure("uts"); err == nil {
		t.Fatal("Ensure over a UTS namespace = nil error, want one")
	}
}

func TestBadNamesRejected(t *testing.T) {
	d := Dir{Path: t.TempDir()} // no root needed: nothing gets that far
	if err := d.Delete(".."); err == nil {
		t.Error(`Delete("..") = nil, want an error`)
	}
	if _, err := os.Stat(filepath.Dir(d.Path)); err != nil {
		t.Fatalf(`parent of Dir after Delete(".."): %v`, err)
	}
	if _, _, err := d.Open("a/b"); err == nil {
		t.Error(`Open("a/b") = nil error, want one`)
	}
	if _, _, err := d.Ensure(""); err == nil {
		t.Error(`Ensure("") = nil error, want one`)
	}
	if _, err := os.Stat(filepath.Join(d.Path, "a")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("bad names created %s: %v", filepath.Join(d.Path, "a"), err)
	}
}
