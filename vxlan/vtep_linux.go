package vxlan

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/internal/netdev"
)

// VTEP is this host's tunnel endpoint: the underlay interface, the address
// other hosts send VXLAN packets to, and the interface's MTU.
type VTEP struct {
	Interface string
	Addr      netip.Addr
	MTU       int
}

// ResolveVTEP finds the VTEP from --vtep-interface and --vtep-ip (either may
// be empty): an address alone finds its interface, an interface alone its
// first global address (IPv4 preferred), neither the interface of the IPv4
// default route and its preferred source address.
func (m *Manager) ResolveVTEP(iface, ip string) (VTEP, error) {
	var want netip.Addr
	if ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return VTEP{}, fmt.Errorf("--vtep-ip %q is not an IP address", ip)
		}
		want = a.Unmap()
	}
	var link netlink.Link
	var err error
	var routeSrc netip.Addr
	switch {
	case iface != "":
		var found bool
		if link, found, err = m.nlh.Lookup(iface); err != nil {
			return VTEP{}, fmt.Errorf("--vtep-interface %q: %w", iface, err)
		}
		if !found {
			return VTEP{}, fmt.Errorf("--vtep-interface %q: no such interface on this host", iface)
		}
	case want.IsValid():
		if link, err = m.linkWithAddr(want); err != nil {
			return VTEP{}, err
		}
	default:
		if link, routeSrc, err = m.defaultRouteLink(); err != nil {
			return VTEP{}, err
		}
	}
	addrs, err := m.nlh.Addrs(link)
	if err != nil {
		return VTEP{}, err
	}
	v := VTEP{Interface: link.Attrs().Name, MTU: link.Attrs().MTU}
	v.Addr = pickAddr(addrs, want, routeSrc)
	if !v.Addr.IsValid() {
		if want.IsValid() {
			return VTEP{}, fmt.Errorf("--vtep-ip %s is not an address of interface %s", want, v.Interface)
		}
		return VTEP{}, fmt.Errorf("interface %s has no global address to use as VTEP: set --vtep-ip", v.Interface)
	}
	return v, nil
}

// pickAddr chooses among an interface's addresses: want if it is there,
// else the route's source, else the first global IPv4, else IPv6 address.
func pickAddr(addrs []netlink.Addr, want, routeSrc netip.Addr) netip.Addr {
	var v4, v6 netip.Addr
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if want.IsValid() || routeSrc.IsValid() {
			if ip == want || ip == routeSrc {
				return ip
			}
			continue
		}
		if !ip.IsGlobalUnicast() {
			continue
		}
		if ip.Is4() && !v4.IsValid() {
			v4 = ip
		}
		if ip.Is6() && !v6.IsValid() {
			v6 = ip
		}
	}
	if want.IsValid() {
		return netip.Addr{}
	}
	if v4.IsValid() {
		return v4
	}
	return v6
}

func (m *Manager) linkWithAddr(want netip.Addr) (netlink.Link, error) {
	links, err := m.nlh.Links()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		addrs, err := m.nlh.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == want {
				return l, nil
			}
		}
	}
	return nil, fmt.Errorf("--vtep-ip %s is not an address of any interface of this host", want)
}

func (m *Manager) defaultRouteLink() (netlink.Link, netip.Addr, error) {
	routes, err := netdev.RetryDump("list routes", func() ([]netlink.Route, error) {
		return m.nlh.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, netip.Addr{}, err
	}
	for _, r := range routes {
		if (r.Dst != nil && !isDefault(r.Dst.String())) || r.LinkIndex == 0 {
			continue
		}
		link, err := m.nlh.LinkByIndex(r.LinkIndex)
		if err != nil {
			return nil, netip.Addr{}, fmt.Errorf("interface of the default route: %w", err)
		}
		src, _ := netip.AddrFromSlice(r.Src)
		return link, src.Unmap(), nil
	}
	return nil, netip.Addr{}, fmt.Errorf("no IPv4 default route to find the VTEP interface: set --vtep-interface or --vtep-ip")
}

func isDefault(dst string) bool { return dst == "0.0.0.0/0" }
