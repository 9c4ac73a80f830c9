package bridge

import (
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/internal/netdev"
)

// Routes lists what the host reaches directly or routes to, IPv4 and IPv6,
// each with its interface: the destinations of the main table's routes and
// the host's own addresses (as one-address prefixes), so that no network's
// subnet shadows one (the IPAM's default pools avoid them, explicit subnets
// overlapping one are refused). Default routes and link-local and
// multicast prefixes are left out: every pool "overlaps" them.
func (m *Manager) Routes() ([]Route, error) {
	routes, err := netdev.RetryDump("list routes", func() ([]netlink.Route, error) {
		return m.nlh.RouteList(nil, netlink.FAMILY_ALL)
	})
	if err != nil {
		return nil, err
	}
	_, names, err := m.linksByIndex()
	if err != nil {
		return nil, err
	}
	var out []Route
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if p, ok := prefixOf(r.Dst); ok && routable(p) {
			out = append(out, Route{Prefix: p.Masked(), Iface: names[r.LinkIndex]})
		}
	}
	addrs, err := netdev.RetryDump("list addresses", func() ([]netlink.Addr, error) {
		return m.nlh.AddrList(nil, netlink.FAMILY_ALL)
	})
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && routable(p) && a.Scope == unix.RT_SCOPE_UNIVERSE {
			out = append(out, Route{Prefix: netip.PrefixFrom(p.Addr(), p.Addr().BitLen()), Iface: names[a.LinkIndex], Local: true})
		}
	}
	return out, nil
}

func routable(p netip.Prefix) bool {
	return p.Bits() > 0 && !p.Addr().IsLinkLocalUnicast() && !p.Addr().IsMulticast() && !p.Addr().IsLoopback()
}
