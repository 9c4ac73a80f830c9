package main

import (
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/vxbridge/vxbridge/namespace"
	"github.com/vxbridge/vxbridge/namespace/networks"
)

// The driver reads a missing namespace as (nil, false): the adapter must
// not wrap a nil namespace into a non-nil driver.NetNS. Root only (a
// netlink handle in the plugin's namespace); it makes no namespace.
func TestDriverNamespacesOpenMissing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	spaces, err := networks.New(namespace.Dir{Path: t.TempDir()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer spaces.Close()
	ns, found, err := driverNamespaces{spaces}.Open("vxbridge-0123456789ab")
	if err != nil || found || ns != nil {
		t.Fatalf("Open of a missing namespace = %v, %t, %v; want nil, false, nil", ns, found, err)
	}
	if names, err := (driverNamespaces{spaces}).List(); err != nil || len(names) != 0 {
		t.Fatalf("List of an empty directory = %v, %v", names, err)
	}
}
