package ipam

import (
	"net/netip"
	"testing"

	helpers "github.com/docker/go-plugins-helpers/ipam"

	"github.com/vxbridge/vxbridge/bridge"
)

// A pool of all addresses, or absurdly large, is refused; so is one that
// overlaps the host's own addresses or routes, naming them. Both fail
// without their check (checked by removing each).
func TestExplicitPoolsThatMakeNoSense(t *testing.T) {
	routes := []bridge.Route{
		{Prefix: mp("203.0.113.0/24"), Iface: "eth0"},
		{Prefix: mp("192.0.2.10/32"), Iface: "eth1", Local: true},
		{Prefix: mp("2001:db8:5::/48"), Iface: "eth0"},
	}
	d := newDriver(t, openStore(t, t.TempDir()), Options{HostRoutes: func() ([]bridge.Route, error) { return routes, nil }})
	for _, c := range []struct {
		pool  string
		class error
		says  string
	}{
		{"0.0.0.0/0", ErrInvalid, "subnet 0.0.0.0/0 is too large for a network: more than an IPv4 /8"},
		{"::/0", ErrInvalid, "subnet ::/0 is too large"},
		{"10.0.0.0/7", ErrInvalid, "give a --subnet of /8 or smaller"},
		{"fd00::/16", ErrInvalid, "more than an IPv6 /32"},
		{"203.0.113.128/25", ErrPoolOverlap, "subnet 203.0.113.128/25 overlaps the host's route 203.0.113.0/24 via eth0"},
		{"192.0.2.0/24", ErrPoolOverlap, "overlaps the host's address 192.0.2.10 of eth1"},
		{"2001:db8::/32", ErrPoolOverlap, "route 2001:db8:5::/48 via eth0"},
	} {
		_, err := d.RequestPool(&helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: c.pool, V6: netip.MustParsePrefix(c.pool).Addr().Is6()})
		wantErr(t, err, c.class, c.says)
	}
	requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.0.0.0/8"})
	requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "2001:db8:6::/64", V6: true})
}
