package firewall

import (
	"net/netip"
	"testing"
)

// A cross-host network's own rules work in nftables mode as in iptables
// mode: a container's DNS query to a resolver outside the network goes to
// vxbridge's DNS server on the names port (REDIRECT, at the gateway), and
// the host's own traffic into the network leaves from the host's own
// address of it, not from the gateway every host shares (SNAT).
func TestFunctionalNFTNamesAndHostReach(t *testing.T) {
	h := newNFTTestHost(t)
	fw := newNFTFirewall(t, h.ns)
	h.bridge("vxb-n1", "10.1.0.1/24")
	must(t, h.ns.Handle().AddrAdd(mustLink(t, h.ns, "vxb-n1"), mustAddr(t, "10.1.0.250/24"))) // as the driver puts it on the gateway link
	c1 := h.container("vxh-c1", "vxb-n1", "10.1.0.2/24", "10.1.0.1")
	namesPort := serve(t, h.ns) // vxbridge's DNS server stands in: it answers with the query's source
	n := Network{ID: "n1", Bridge: "vxb-n1", Subnets: []netip.Prefix{prefix("10.1.0.0/24")}, Masquerade: true, ICC: true,
		Gateways: []netip.Addr{addr("10.1.0.1")}, HostAddrs: []netip.Addr{addr("10.1.0.250")}, NamesPort: namesPort}
	do(t, h.ns, func() error { return fw.EnsureNetwork(n) })

	resolver := endpoint{"a resolver outside", nil, "198.51.100.53", 53}
	requireReach(t, endpoint{"c1", c1, "10.1.0.2", 0}, resolver, "10.1.0.2")
	web := endpoint{"c1's server", c1, "10.1.0.2", serve(t, c1)}
	requireReach(t, endpoint{"the host", h.ns, "10.1.0.1", 0}, web, "10.1.0.250")

	n.NamesPort, n.HostAddrs = 0, nil
	do(t, h.ns, func() error { return fw.EnsureNetwork(n) })
	if seen, err := dial(c1, resolver.addr, resolver.port, blockWait); err == nil {
		t.Errorf("without a names port, c1's query was still answered (source %s)", seen)
	}
	requireReach(t, endpoint{"the host", h.ns, "10.1.0.1", 0}, web, "10.1.0.1")
}
