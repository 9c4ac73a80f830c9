package namespace

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

func openMountNS(t *testing.T, path string) *MountNS {
	t.Helper()
	m, err := OpenMountNS(path)
	if err != nil {
		t.Fatal(err)
	}
	if m == nil {
		t.Fatalf("OpenMountNS(%s) = nil: taken for the process's own", path)
	}
	t.Cleanup(m.Close)
	return m
}

// A Dir in another mount namespace mounts its namespaces there and only
// there: the test process's own mount namespace sees plain files, the Dir
// (and a second Dir on the same namespace, as after a restart) sees the
// namespaces, and Delete takes them off there.
func TestDirInOtherMountNamespace(t *testing.T) {
	own := newDir(t, "netns") // its cleanup checks that nothing is mounted in our namespace
	other := nstest.MountNS(t)
	d := Dir{Path: own.Path, Mounts: openMountNS(t, other)}

	h, created := ensure(t, d, "n1")
	if !created {
		t.Fatal("first Ensure: created = false")
	}
	path := filepath.Join(d.Path, "n1")
	if m := mountsUnder(t, own.Path); len(m) > 0 {
		t.Fatalf("Ensure mounted in the test process's own mount namespace: %q", m)
	}
	if ok, err := IsNamespace(path); ok || err != nil {
		t.Fatalf("IsNamespace(%s) in our own mount namespace = %v, %v; want a plain file", path, ok, err)
	}
	if ok, err := d.Mounted("n1"); !ok || err != nil {
		t.Fatalf("Mounted(n1) = %v, %v; want true", ok, err)
	}
	again := Dir{Path: d.Path, Mounts: openMountNS(t, other)} // a restarted process
	if inode(t, open(t, again, "n1")) != inode(t, h) {
		t.Fatal("Open through a second handle of the mount namespace found another namespace")
	}
	if names, err := again.List(""); err != nil || !slices.Equal(names, []string{"n1"}) {
		t.Fatalf("List = %q, %v", names, err)
	}
	if _, created := ensure(t, again, "n1"); created {
		t.Fatal("Ensure of an existing namespace made a new one")
	}
	if err := again.Delete("n1"); err != nil {
		t.Fatal(err)
	}
	if ok, err := d.Mounted("n1"); ok || err != nil {
		t.Fatalf("Mounted(n1) after Delete = %v, %v; want false", ok, err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("file after Delete: %v", err)
	}
}

func TestOpenMountNS(t *testing.T) {
	newDir(t, "") // skips without root
	if m, err := OpenMountNS("/proc/thread-self/ns/mnt"); m != nil || err != nil {
		t.Errorf("OpenMountNS(own) = %v, %v; want nil, nil", m, err)
	}
	for _, path := range []string{"/proc/thread-self/ns/net", "/nonexistent", "/"} {
		if m, err := OpenMountNS(path); m != nil || err == nil {
			t.Errorf("OpenMountNS(%s) = %v, %v; want an error", path, m, err)
		}
	}
}
