package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/bridge"
)

// netnsRooms over a directory of its own: rooms are opened once and kept,
// a namespace that lost its mount is dropped (Open) or made again (Ensure),
// Delete removes it. Root only; it makes namespaces, never links in the
// test's own.
func TestNetnsRooms(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	rooms, err := newNetnsRooms(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	const name = "vxbridge-0123456789ab"
	t.Cleanup(func() {
		rooms.Delete(name)
		rooms.close()
	})
	if _, found, err := rooms.Open(name); err != nil || found {
		t.Fatalf("Open before Ensure: found %t, %v", found, err)
	}
	ns, err := rooms.Ensure(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Links().EnsureBridge(bridge.BridgeConfig{Name: "vxb-test", Alias: "vxbridge:net:test"}); err != nil {
		t.Fatal(err)
	}
	again, found, err := rooms.Open(name)
	if err != nil || !found || again != ns {
		t.Fatalf("Open after Ensure: %v, found %t, %v; want the same rooms", again, found, err)
	}
	if names, err := rooms.List(); err != nil || !slices.Equal(names, []string{name}) {
		t.Fatalf("List = %v, %v", names, err)
	}

	// Someone unmounts it: Open reports it gone, Ensure makes a new, empty one.
	if err := unix.Unmount(filepath.Join(dir, name), unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if _, found, err := rooms.Open(name); err != nil || found {
		t.Fatalf("Open of an unmounted namespace: found %t, %v", found, err)
	}
	ns, err = rooms.Ensure(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, exists, err := ns.Links().Link("vxb-test"); err != nil || exists {
		t.Fatalf("the new namespace has the old one's bridge (%t, %v)", exists, err)
	}

	if err := rooms.Delete(name); err != nil {
		t.Fatal(err)
	}
	if names, err := rooms.List(); err != nil || len(names) != 0 {
		t.Fatalf("List after Delete = %v, %v", names, err)
	}
	if err := rooms.Delete(name); err != nil {
		t.Errorf("Delete of a missing namespace: %v", err)
	}
}
