package networks

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/namespace"
)

// Namespaces over a directory of their own: a namespace is opened once and
// kept, one that lost its mount is dropped (Open) or made again (Ensure),
// Delete removes it. Root only; it makes namespaces, never links in the
// test's own.
func TestNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	spaces, err := New(namespace.Dir{Path: dir}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	const prefix, name = "vxbridge-", "vxbridge-0123456789ab"
	t.Cleanup(func() {
		spaces.Delete(name)
		spaces.Close()
	})
	if _, found, err := spaces.Open(name); err != nil || found {
		t.Fatalf("Open before Ensure: found %t, %v", found, err)
	}
	ns, err := spaces.Ensure(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Links().EnsureBridge(bridge.BridgeConfig{Name: "vxb-test", Alias: "vxbridge:net:test"}); err != nil {
		t.Fatal(err)
	}
	again, found, err := spaces.Open(name)
	if err != nil || !found || again != ns {
		t.Fatalf("Open after Ensure: %v, found %t, %v; want the same namespace", again, found, err)
	}
	if names, err := spaces.List(prefix); err != nil || !slices.Equal(names, []string{name}) {
		t.Fatalf("List = %v, %v", names, err)
	}

	// Someone unmounts it: Open reports it gone, Ensure makes a new, empty one.
	if err := unix.Unmount(filepath.Join(dir, name), unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if _, found, err := spaces.Open(name); err != nil || found {
		t.Fatalf("Open of an unmounted namespace: found %t, %v", found, err)
	}
	ns, err = spaces.Ensure(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, exists, err := ns.Links().Link("vxb-test"); err != nil || exists {
		t.Fatalf("the new namespace has the old one's bridge (%t, %v)", exists, err)
	}

	if err := spaces.Delete(name); err != nil {
		t.Fatal(err)
	}
	if names, err := spaces.List(prefix); err != nil || len(names) != 0 {
		t.Fatalf("List after Delete = %v, %v", names, err)
	}
	if err := spaces.Delete(name); err != nil {
		t.Errorf("Delete of a missing namespace: %v", err)
	}
}
