package bridge

import (
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/vxbridge/vxbridge/internal/netdev"
)

// Routes lists the destinations the host routes to, IPv4 and IPv6, so the
// IPAM never picks a default pool that would shadow one. Default routes and
// link-local prefixes are left out: every pool "overlaps" them.
func (m *Manager) Routes() ([]netip.Prefix, error) {
	routes, err := netdev.RetryDump("list routes", func() ([]netlink.Route, error) {
		return m.nlh.RouteList(nil, netlink.FAMILY_ALL)
	})
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		p, ok := prefixOf(r.Dst)
		if !ok || p.Bits() == 0 || p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast() {
			continue
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
