package bridge

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// isStaleAddr says whether an address found on the bridge must go so that the
// bridge converges on want. Link-local addresses stay: the kernel puts fe80::
// on every up interface itself, and 169.254/16 is not ours to manage either.
func isStaleAddr(have netip.Prefix, want []netip.Prefix) bool {
	if have.Addr().IsLinkLocalUnicast() {
		return false
	}
	return !slices.Contains(want, have)
}

// prefixOf converts an address the kernel reported. IPv4 addresses come as
// 16-byte net.IPs, so the conversion unmaps them.
func prefixOf(ipn *net.IPNet) (netip.Prefix, bool) {
	if ipn == nil {
		return netip.Prefix{}, false
	}
	ip := ipn.IP
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := ipn.Mask.Size()
	if bits != addr.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(addr, ones), true
}

// ipNet is the inverse of prefixOf. The host bits stay: p is an address on
// the interface, not a network.
func ipNet(p netip.Prefix) *net.IPNet {
	a := p.Addr()
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

// randomMAC returns a locally administered unicast address. A bridge whose
// address was set explicitly keeps it; otherwise the kernel gives it the
// lowest MAC among its ports, so the gateway's MAC would change as
// containers come and go and their neighbour caches would go stale.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("random mac: %w", err)
	}
	mac[0] = mac[0]&^0x01 | 0x02
	return mac, nil
}
