package bridge

import (
	"slices"
	"testing"
)

func TestRoutesListsConnectedPrefixes(t *testing.T) {
	m, _ := newTestManager(t)
	cfg := testBridgeConfig()
	if err := m.EnsureBridge(cfg); err != nil {
		t.Fatal(err)
	}
	routes, err := m.Routes()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range cfg.Addrs {
		if !slices.Contains(routes, a.Masked()) {
			t.Errorf("routes %v lack the connected prefix %v", routes, a.Masked())
		}
	}
	for _, r := range routes {
		if r.Bits() == 0 || r.Addr().IsLinkLocalUnicast() || r.Addr().IsMulticast() || r != r.Masked() {
			t.Errorf("route %v should have been left out", r)
		}
	}
}
