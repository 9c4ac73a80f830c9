package bridge

import (
	"net/netip"
	"testing"
)

func TestRoutesListsConnectedPrefixesAndAddresses(t *testing.T) {
	m, _ := newTestManager(t)
	cfg := testBridgeConfig()
	if err := m.EnsureBridge(cfg); err != nil {
		t.Fatal(err)
	}
	routes, err := m.Routes()
	if err != nil {
		t.Fatal(err)
	}
	has := map[Route]bool{}
	for _, r := range routes {
		has[r] = true
		if p := r.Prefix; p.Bits() == 0 || p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast() || p.Addr().IsLoopback() || p != p.Masked() {
			t.Errorf("route %v should have been left out", r)
		}
	}
	for _, a := range cfg.Addrs {
		if !has[Route{Prefix: a.Masked(), Iface: cfg.Name}] {
			t.Errorf("routes %v lack the connected prefix %v via %s", routes, a.Masked(), cfg.Name)
		}
		if own := (Route{Prefix: netip.PrefixFrom(a.Addr(), a.Addr().BitLen()), Iface: cfg.Name, Local: true}); !has[own] {
			t.Errorf("routes %v lack the address %v", routes, own)
		}
	}
}
