package driver

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/vxbridge/vxbridge/bridge"
)

// With docker's own IPAM the driver is the only one to see a subnet: one of
// all addresses, one absurdly large, or one overlapping the host's routes
// or addresses is refused, naming what is wrong, and nothing is built.
func TestCreateNetworkRefusesSubnetsThatMakeNoSense(t *testing.T) {
	h := newHarness(t)
	h.links.HostRoutes = []bridge.Route{{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Iface: "eth0"},
		{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Iface: "eth1", Local: true}}
	for _, c := range []struct{ pool, gw, says string }{
		{"0.0.0.0/0", "0.0.0.1/0", "subnet 0.0.0.0/0 is too large for a network"},
		{"10.0.0.0/7", "10.0.0.1/7", "give a --subnet of /8 or smaller"},
		{"203.0.113.0/25", "203.0.113.1/25", "overlaps the host's route 203.0.113.0/24 via eth0"},
		{"198.51.100.0/24", "198.51.100.1/24", "overlaps the host's address 198.51.100.7 of eth1"},
	} {
		err := h.d.CreateNetwork(createReq(netA, c.pool, c.gw, nil))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("subnet %s: %v; want ErrInvalid saying %q", c.pool, err, c.says)
		}
		if len(h.links.Links) != 0 || len(h.fw.Nets) != 0 {
			t.Errorf("subnet %s: left links %v, rules %v", c.pool, h.links.Names(), h.fw.Nets)
		}
	}
	mustCreate(t, h, createReq(netA, "10.0.0.0/8", "10.0.0.1/8", nil))
	// Its own bridge's route is the network's: a replayed create succeeds.
	mustCreate(t, h, createReq(netA, "10.0.0.0/8", "10.0.0.1/8", nil))
	if err := h.d.CreateNetwork(createReq(netB, "10.1.0.0/16", "10.1.0.1/16", nil)); !errors.Is(err, ErrInvalid) {
		t.Errorf("a subnet inside another network's: %v", err)
	}
}
