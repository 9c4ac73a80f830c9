package ipam

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/vxbridge/vxbridge/store"
)

// A pool is cross-host only as the subnet of a network with a VNI; an
// unreadable store keeps allocations local.
func TestCrossHostPool(t *testing.T) {
	subnet := func(p string) []store.Subnet { return []store.Subnet{{Pool: netip.MustParsePrefix(p)}} }
	nets := []store.Network{
		{ID: "a", VNI: 42, IPv4: subnet("10.1.0.0/24"), IPv6: subnet("fd01::/64")},
		{ID: "b", IPv4: subnet("10.2.0.0/24")},
	}
	cross := CrossHostPool(func() ([]store.Network, error) { return nets, nil })
	for p, want := range map[string]bool{
		"10.1.0.0/24": true,  // the cross-host network's IPv4 subnet
		"fd01::/64":   true,  // and its IPv6 one
		"10.2.0.0/24": false, // a single-host network's
		"10.1.0.0/25": false, // inside, but not the subnet
		"10.9.0.0/24": false, // no network's
	} {
		if got := cross(netip.MustParsePrefix(p)); got != want {
			t.Errorf("%s: cross-host %t, want %t", p, got, want)
		}
	}
	broken := CrossHostPool(func() ([]store.Network, error) { return nil, errors.New("disk gone") })
	if broken(netip.MustParsePrefix("10.1.0.0/24")) {
		t.Error("an unreadable store made a pool cross-host")
	}
}
