package ipam

// Subnets no network can sensibly have. A network's subnet becomes a
// connected route of this host (its bridge's, or its gateway link's): any
// of the host's own addresses or routes it overlaps would be taken from
// the host's other interfaces, cutting the host off from what it reaches
// there (its default gateway, its etcd, its DNS). And a subnet of more than
// a /8 (IPv4) or a /32 (IPv6) covers addresses the rest of the world uses.
// Both are refused, naming what is in the way, for explicit subnets from
// vxbridge's IPAM and (the driver checks too) from docker's.

import (
	"net/netip"

	"github.com/vxbridge/vxbridge/bridge"
)

// The largest subnets a network may have, by family.
const (
	MaxSubnetV4 = 8  // a /8
	MaxSubnetV6 = 32 // a /32
)

// CheckSubnet refuses a subnet larger than MaxSubnetV4 or MaxSubnetV6
// (0.0.0.0/0 and ::/0 among them).
func CheckSubnet(p netip.Prefix) error {
	limit, family := MaxSubnetV4, "IPv4"
	if p.Addr().Is6() {
		limit, family = MaxSubnetV6, "IPv6"
	}
	if p.Bits() >= limit {
		return nil
	}
	return errorf(ErrInvalid, "subnet %s is too large for a network: more than an %s /%d takes in addresses the rest of the network uses; give a --subnet of /%d or smaller (a /24 or /64 is usual)",
		p, family, limit, limit)
}

// CheckRoutes refuses a subnet that overlaps a destination the host
// reaches (routes, as bridge.Manager.Routes lists them), naming it; ignore
// says which are the network's own (nil: none).
func CheckRoutes(p netip.Prefix, routes []bridge.Route, ignore func(bridge.Route) bool) error {
	for _, r := range routes {
		if !r.Prefix.Overlaps(p) || ignore != nil && ignore(r) {
			continue
		}
		return errorf(ErrPoolOverlap, "subnet %s overlaps the host's %s: the network would take that traffic from %s; "+
			"choose a subnet clear of the host's addresses and routes (ip addr, ip route)", p, r, r.Iface)
	}
	return nil
}
