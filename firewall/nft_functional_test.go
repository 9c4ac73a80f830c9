package firewall

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

// Functional tier for the nftables backend: a host namespace set up as
// docker's --firewall-backend=nftables leaves it (forwarding on, no
// iptables rule, FORWARD policy ACCEPT, docker's rules in a table of its
// own), vxbridge's rules in theirs, traffic between namespaces.

// newNFTTestHost is a namespace like a docker host in nftables mode, with
// docker0's rules as docker writes them (a base chain at priority filter:
// replies into docker0 pass, other traffic into it drops, traffic out of
// it passes).
func newNFTTestHost(t *testing.T) *testHost {
	h := newRoutingHost(t)
	nftBaseChain(t, h.ns, dockerNFTTable, 0,
		"-o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-o docker0 -j DROP",
		"-i docker0 -j ACCEPT")
	return h
}

// nftBaseChain makes table (ip family) with a forward filter base chain at
// priority filter+prio holding rules (written as iptables specs): docker's
// table, or an operator's.
func nftBaseChain(t *testing.T, ns *nstest.NS, table string, prio int32, rules ...string) {
	t.Helper()
	do(t, ns, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tb := c.AddTable(&nftables.Table{Name: table, Family: nftables.TableFamilyIPv4})
		p := nftables.ChainPriority(prio)
		ch := c.AddChain(&nftables.Chain{Name: "filter-FORWARD", Table: tb, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: &p})
		for _, r := range rules {
			exprs, _, err := renderRule(false, tableFilter, splitLine(r))
			if err != nil {
				return err
			}
			c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: exprs})
		}
		return c.Flush()
	})
}

func delNFTTable(t *testing.T, ns *nstest.NS, table string) {
	t.Helper()
	do(t, ns, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		c.DelTable(&nftables.Table{Name: table, Family: nftables.TableFamilyIPv4})
		return c.Flush()
	})
}

// The guarantees of iptables mode hold in nftables mode: forwarding within
// a network, masquerade, isolation from other vxbridge networks, from
// docker's bridges both ways and from the outside, --internal, icc=false
// against the routed hairpin; and an operator's drop decides first.
func TestFunctionalNFTIsolation(t *testing.T) {
	h := newNFTTestHost(t)
	fw := newNFTFirewall(t, h.ns)
	netA := Network{ID: "neta", Bridge: "vxb-a", Subnets: []netip.Prefix{prefix("10.20.1.0/24")}, Masquerade: true, ICC: true}
	netB := Network{ID: "netb", Bridge: "vxb-b", Subnets: []netip.Prefix{prefix("10.20.2.0/24")}, Masquerade: true, ICC: true}
	netC := Network{ID: "netc", Bridge: "vxb-c", Subnets: []netip.Prefix{prefix("10.20.4.0/24")}, Internal: true, ICC: true}
	for _, n := range []struct{ br, gw string }{{"vxb-a", "10.20.1.1/24"}, {"vxb-b", "10.20.2.1/24"}, {"vxb-c", "10.20.4.1/24"}, {"docker0", "10.20.3.1/24"}} {
		h.bridge(n.br, n.gw)
	}
	ep := func(name string, ns *nstest.NS, addr string) endpoint {
		return endpoint{name: name, ns: ns, addr: addr, port: serve(t, ns)}
	}
	a1 := ep("a1", h.container("va1", "vxb-a", "10.20.1.2/24", "10.20.1.1"), "10.20.1.2")
	a2 := ep("a2", h.container("va2", "vxb-a", "10.20.1.3/24", "10.20.1.1"), "10.20.1.3")
	b1 := ep("b1", h.container("vb1", "vxb-b", "10.20.2.2/24", "10.20.2.1"), "10.20.2.2")
	c1 := ep("c1", h.container("vc1", "vxb-c", "10.20.4.2/24", "10.20.4.1"), "10.20.4.2")
	d1 := ep("d1", h.container("vd1", "docker0", "10.20.3.2/24", "10.20.3.1"), "10.20.3.2")
	out := ep("outside", h.container("uplink", "", "198.51.100.2/24", ""), "198.51.100.2")
	must(t, h.ns.Handle().AddrAdd(mustLink(t, h.ns, "uplink"), mustAddr(t, "198.51.100.1/24")))
	must(t, out.ns.Handle().RouteAdd(&netlink.Route{LinkIndex: mustLink(t, out.ns, "eth0").Attrs().Index,
		Dst: &net.IPNet{IP: net.IPv4(10, 20, 0, 0), Mask: net.CIDRMask(16, 32)}, Gw: net.ParseIP("198.51.100.1")}))

	// Control: without vxbridge's rules nothing stops the traffic here.
	requireReach(t, a1, b1, a1.addr)
	requireReach(t, d1, a1, d1.addr)

	for _, n := range []Network{netA, netB, netC} {
		do(t, h.ns, func() error { return fw.EnsureNetwork(n) })
	}
	requireReach(t, a1, a2, a1.addr)
	requireReach(t, a1, out, "198.51.100.1") // masqueraded
	requireBlocked(t, a1, b1)
	requireBlocked(t, b1, a1)
	requireBlocked(t, a1, d1) // docker's own drop, and our outbound guard
	requireBlocked(t, d1, a1) // docker accepts what leaves docker0; we drop it
	requireBlocked(t, out, a1)
	requireBlocked(t, c1, out)
	requireBlocked(t, a1, c1)

	// A docker network made later is isolated at once: no jump to move.
	h.bridge("br-new", "10.20.5.1/24")
	nftBaseChain(t, h.ns, "docker-later", 0, "-i br-new -j ACCEPT")
	n1 := ep("n1", h.container("vn1", "br-new", "10.20.5.2/24", "10.20.5.1"), "10.20.5.2")
	requireBlocked(t, n1, a1)

	// An operator's drop, in a table of theirs at docker's priority (where
	// docker's documentation puts it), decides before vxbridge's accept.
	nftBaseChain(t, h.ns, "operator", 0, "-i vxb-a -d 10.20.1.3/32 -m conntrack --ctstate NEW -j DROP")
	requireBlocked(t, a1, a2)
	requireReach(t, a2, a1, a2.addr)
	delNFTTable(t, h.ns, "operator")
	requireReach(t, a1, a2, a1.addr)

	do(t, h.ns, func() error { return fw.RemoveNetwork(netA.ID) })
	requireReach(t, b1, out, "198.51.100.1")
	// Nothing drops a1's traffic now (no policy DROP anywhere in this
	// mode), but it is no longer masqueraded.
	if seen, _ := dial(a1.ns, out.addr, out.port, blockWait); seen == "198.51.100.1" {
		t.Error("a1 still masqueraded after its network went")
	}
}

// Published ports in nftables mode: from outside, from the host, from
// another container and from the container itself (hairpin); loopback left
// to the proxy; a moved UDP port's flow follows it once RemovePorts flushed
// conntrack; icc=false stops the routed hairpin.
func TestFunctionalNFTPortsAndICC(t *testing.T) {
	h := newNFTTestHost(t)
	fw := newNFTFirewall(t, h.ns)
	n := Network{ID: "pub", Bridge: "vxb-pub", Subnets: []netip.Prefix{prefix("10.30.1.0/24")}, Masquerade: true, ICC: false}
	h.bridge("vxb-pub", "10.30.1.1/24")
	do(t, h.ns, func() error { return fw.EnsureNetwork(n) })
	c1 := endpoint{name: "c1", addr: "10.30.1.2", ns: h.container("vc1", "vxb-pub", "10.30.1.2/24", "10.30.1.1")}
	c2 := endpoint{name: "c2", addr: "10.30.1.3", ns: h.container("vc2", "vxb-pub", "10.30.1.3/24", "10.30.1.1")}
	c1.port = serve(t, c1.ns)
	out := endpoint{name: "outside", addr: "198.51.100.2", ns: h.container("uplink", "", "198.51.100.2/24", "")}
	must(t, h.ns.Handle().AddrAdd(mustLink(t, h.ns, "uplink"), mustAddr(t, "198.51.100.1/24")))
	const hostIP, hostPort = "198.51.100.1", 8080
	published := endpoint{name: "published port", addr: hostIP, port: hostPort}

	// icc=false: c2 routed to c1 through the gateway is dropped (the xt
	// physdev match), while the published port still takes c2 in.
	for _, e := range [][2]endpoint{{c1, c2}, {c2, c1}} {
		must(t, e[0].ns.Handle().RouteAdd(&netlink.Route{LinkIndex: mustLink(t, e[0].ns, "eth0").Attrs().Index,
			Dst: &net.IPNet{IP: net.ParseIP(e[1].addr), Mask: net.CIDRMask(32, 32)}, Gw: net.ParseIP("10.30.1.1")}))
	}
	requireBlocked(t, c2, c1)

	p := Ports{NetworkID: n.ID, EndpointID: "e1", Bridge: n.Bridge, Subnets: n.Subnets, Mappings: []PortMapping{
		{Proto: "tcp", HostIP: netip.IPv4Unspecified(), HostPort: hostPort, ContainerIP: addr(c1.addr), ContainerPort: uint16(c1.port)},
		{Proto: "udp", HostIP: netip.IPv4Unspecified(), HostPort: 5353, ContainerIP: addr(c1.addr), ContainerPort: 53},
	}}
	do(t, h.ns, func() error { return fw.EnsurePorts(p) })
	requireReach(t, out, published, out.addr)
	requireReach(t, endpoint{name: "host", ns: h.ns}, published, "")
	requireReach(t, c2, published, "10.30.1.1")
	if _, err := dial(h.ns, "127.0.0.1", hostPort, blockWait); err == nil {
		t.Errorf("host -> 127.0.0.1:%d reached the container: loopback must be left to the proxy", hostPort)
	}
	must(t, h.ns.Handle().LinkSetHairpin(mustLink(t, h.ns, "vc1"), true))
	requireReach(t, c1, published, "10.30.1.1")

	ask, moved := udpFlowToC1(t, out, c1, c2, hostIP, p)
	do(t, h.ns, func() error { return fw.RemovePorts(p) })
	do(t, h.ns, func() error { return fw.EnsurePorts(moved) })
	if got := ask(); got != "c2" {
		t.Errorf("after RemovePorts the flow went to %q, want c2", got)
	}
}
