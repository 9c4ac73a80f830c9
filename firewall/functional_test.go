package firewall

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

// Functional tier: a host namespace with docker's FORWARD policy and
// br_netfilter, vxbridge networks and a docker-like bridge with "containers"
// (namespaces on veths), and an "outside" namespace that has no route back
// to the containers, so only masqueraded traffic gets answers. Traffic is
// TCP between namespaces the test made.

const (
	allowWait = 2 * time.Second        // an allowed connection succeeds well within this
	blockWait = 300 * time.Millisecond // a dropped SYN gets no answer at all
)

type testHost struct {
	t  *testing.T
	ns *nstest.NS
}

// newTestHost is a namespace set up like a docker host: forwarding on,
// bridged frames through iptables, FORWARD policy DROP and docker's rules.
func newTestHost(t *testing.T) *testHost {
	h := newRoutingHost(t)
	seedDocker(t, h.ns)
	return h
}

// newRoutingHost is a fresh namespace with forwarding on and bridged frames
// through netfilter, before any firewall rule.
func newRoutingHost(t *testing.T) *testHost {
	h := &testHost{t: t, ns: nstest.New(t)}
	do(t, h.ns, func() error {
		if _, err := os.Stat("/proc/sys/net/bridge"); err != nil {
			return fmt.Errorf("br_netfilter not loaded (modprobe br_netfilter): %w", err)
		}
		for path, val := range map[string]string{
			"/proc/sys/net/ipv4/ip_forward":                "1",
			"/proc/sys/net/bridge/bridge-nf-call-iptables": "1",
		} {
			if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	return h
}

// bridge adds a bridge with gateway address gw (CIDR).
func (h *testHost) bridge(name, gw string) {
	h.t.Helper()
	nlh := h.ns.Handle()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	must(h.t, nlh.LinkAdd(br))
	addr, err := netlink.ParseAddr(gw)
	must(h.t, err)
	must(h.t, nlh.AddrAdd(br, addr))
	must(h.t, nlh.LinkSetUp(br))
}

// container makes a namespace with eth0 at addr (CIDR) and a default route
// via gw, its peer veth hostEnd in the host (on bridge master if not "").
func (h *testHost) container(hostEnd, master, addr, gw string) *nstest.NS {
	h.t.Helper()
	c := nstest.New(h.t)
	var fd netns.NsHandle
	do(h.t, c, func() (err error) {
		fd, err = netns.Get()
		return err
	})
	h.t.Cleanup(func() { fd.Close() })
	nlh := h.ns.Handle()
	attrs := netlink.LinkAttrs{Name: hostEnd}
	if master != "" {
		br, err := nlh.LinkByName(master)
		must(h.t, err)
		attrs.MasterIndex = br.Attrs().Index
	}
	must(h.t, nlh.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(fd)}))
	host, err := nlh.LinkByName(hostEnd)
	must(h.t, err)
	must(h.t, nlh.LinkSetUp(host))

	cl := c.Handle()
	eth0, err := cl.LinkByName("eth0")
	must(h.t, err)
	a, err := netlink.ParseAddr(addr)
	must(h.t, err)
	must(h.t, cl.AddrAdd(eth0, a))
	must(h.t, cl.LinkSetUp(eth0))
	if gw != "" {
		must(h.t, cl.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP(gw)}))
	}
	return c
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// serve listens on a free TCP port of every address of ns and answers each
// connection with the source address it came from.
func serve(t *testing.T, ns *nstest.NS) int {
	t.Helper()
	var ln net.Listener
	do(t, ns, func() (err error) {
		ln, err = net.Listen("tcp4", "0.0.0.0:0")
		return err
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// dial connects from ns to addr:port and returns the source address the
// server saw, or an error when the connection did not complete within wait.
func dial(from *nstest.NS, addr string, port int, wait time.Duration) (string, error) {
	var seen string
	err := from.Do(func() error {
		c, err := net.DialTimeout("tcp4", net.JoinHostPort(addr, strconv.Itoa(port)), wait)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(wait))
		seen, err = bufio.NewReader(c).ReadString('\n')
		seen = strings.TrimSpace(seen)
		return err
	})
	return seen, err
}

type endpoint struct {
	name string
	ns   *nstest.NS
	addr string
	port int
}

func requireReach(t *testing.T, from, to endpoint, wantSource string) {
	t.Helper()
	seen, err := dial(from.ns, to.addr, to.port, allowWait)
	if err != nil {
		t.Errorf("%s -> %s (%s): %v, want a connection", from.name, to.name, to.addr, err)
		return
	}
	if wantSource != "" && seen != wantSource {
		t.Errorf("%s -> %s: the server saw source %s, want %s", from.name, to.name, seen, wantSource)
	}
}

func requireBlocked(t *testing.T, from, to endpoint) {
	t.Helper()
	var nerr net.Error
	if _, err := dial(from.ns, to.addr, to.port, blockWait); err == nil {
		t.Errorf("%s -> %s (%s) connected, want it dropped", from.name, to.name, to.addr)
	} else if !errors.As(err, &nerr) || !nerr.Timeout() {
		t.Errorf("%s -> %s (%s): %v, want a timeout (dropped, not refused)", from.name, to.name, to.addr, err)
	}
}

func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestFunctionalIsolationMasqueradeAndInternal(t *testing.T) {
	h := newTestHost(t)
	var fw *Firewall
	do(t, h.ns, func() (err error) {
		fw, err = New()
		return err
	})

	netA := Network{ID: "neta", Bridge: "vxb-a", Subnets: []netip.Prefix{prefix("10.20.1.0/24")}, Masquerade: true, ICC: true}
	netB := Network{ID: "netb", Bridge: "vxb-b", Subnets: []netip.Prefix{prefix("10.20.2.0/24")}, Masquerade: true, ICC: true}
	netC := Network{ID: "netc", Bridge: "vxb-c", Subnets: []netip.Prefix{prefix("10.20.4.0/24")}, Masquerade: true, ICC: true, Internal: true}
	h.bridge("vxb-a", "10.20.1.1/24")
	h.bridge("vxb-b", "10.20.2.1/24")
	h.bridge("vxb-c", "10.20.4.1/24")
	h.bridge("docker0", "10.20.3.1/24") // a docker network, with docker's rules seeded above
	ep := func(name string, ns *nstest.NS, addr string) endpoint {
		return endpoint{name: name, ns: ns, addr: addr, port: serve(t, ns)}
	}
	a1 := ep("a1", h.container("va1", "vxb-a", "10.20.1.2/24", "10.20.1.1"), "10.20.1.2")
	a2 := ep("a2", h.container("va2", "vxb-a", "10.20.1.3/24", "10.20.1.1"), "10.20.1.3")
	b1 := ep("b1", h.container("vb1", "vxb-b", "10.20.2.2/24", "10.20.2.1"), "10.20.2.2")
	c1 := ep("c1", h.container("vc1", "vxb-c", "10.20.4.2/24", "10.20.4.1"), "10.20.4.2")
	d1 := ep("d1", h.container("vd1", "docker0", "10.20.3.2/24", "10.20.3.1"), "10.20.3.2")
	// The outside world: reachable from the host, with no route back to the
	// containers' subnets.
	out := ep("outside", h.container("uplink", "", "198.51.100.2/24", ""), "198.51.100.2")
	must(t, h.ns.Handle().AddrAdd(mustLink(t, h.ns, "uplink"), mustAddr(t, "198.51.100.1/24")))
	host := endpoint{name: "host", ns: h.ns, addr: "10.20.1.1", port: serve(t, h.ns)}

	// Without vxbridge's rules the FORWARD policy drops even frames between
	// two ports of one bridge: br_netfilter is at work in this namespace.
	requireBlocked(t, a1, a2)

	for _, n := range []Network{netA, netB, netC} {
		do(t, h.ns, func() error { return fw.EnsureNetwork(n) })
	}
	requireReach(t, a1, a2, a1.addr)
	requireReach(t, a2, a1, a2.addr)
	requireReach(t, a1, out, "198.51.100.1") // masqueraded behind the host
	requireReach(t, b1, out, "198.51.100.1")
	requireReach(t, a1, host, "")                             // INPUT: not ours to filter
	requireReach(t, endpoint{name: "host", ns: h.ns}, a1, "") // OUTPUT: neither
	requireReach(t, endpoint{name: "host", ns: h.ns}, c1, "") // nor for internal networks
	requireBlocked(t, a1, b1)                                 // vxbridge network to vxbridge network
	requireBlocked(t, b1, a1)
	requireBlocked(t, a1, d1) // vxbridge to docker
	requireBlocked(t, d1, a1) // docker to vxbridge, although docker's ACCEPT rules follow ours
	// Give the outside a route to the containers: routed straight in, a
	// connection is still refused entry.
	must(t, out.ns.Handle().RouteAdd(&netlink.Route{
		LinkIndex: mustLink(t, out.ns, "eth0").Attrs().Index,
		Dst:       &net.IPNet{IP: net.IPv4(10, 20, 0, 0), Mask: net.CIDRMask(16, 32)},
		Gw:        net.ParseIP("198.51.100.1"),
	}))
	requireBlocked(t, out, a1)
	requireBlocked(t, c1, out) // internal
	requireBlocked(t, a1, c1)
	requireBlocked(t, c1, a1)

	// Docker creates a network: its rules land above our jump (as at every
	// dockerd start), and EnsureJumps puts the jump back on top of them.
	h.bridge("br-new", "10.20.5.1/24")
	n1 := ep("n1", h.container("vn1", "br-new", "10.20.5.2/24", "10.20.5.1"), "10.20.5.2")
	for _, args := range [][]string{
		{"-I", "FORWARD", "-i", "br-new", "-o", "br-new", "-j", "ACCEPT"},
		{"-I", "FORWARD", "-i", "br-new", "!", "-o", "br-new", "-j", "ACCEPT"},
		{"-I", "FORWARD", "-o", "br-new", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
		{"-D", "FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1"},
		{"-I", "FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1"},
		{"-D", "FORWARD", "-j", "DOCKER-USER"},
		{"-I", "FORWARD", "-j", "DOCKER-USER"},
	} {
		run(t, h.ns, "iptables", append([]string{"-w"}, args...)...)
	}
	// Until EnsureJumps, docker's ACCEPTs decide before our chains: the
	// docker guard in mangle FORWARD still keeps n1 out.
	requireBlocked(t, n1, a1)
	requireBlocked(t, n1, c1)
	do(t, h.ns, fw.EnsureJumps)
	requireBlocked(t, n1, a1)
	requireBlocked(t, a1, n1)

	do(t, h.ns, func() error { return fw.RemoveNetwork(netA.ID) })
	requireBlocked(t, a1, a2)
	requireBlocked(t, a1, out)
	requireReach(t, b1, out, "198.51.100.1")
}

// With icc=false, port isolation stops frames between containers at L2; the
// firewall stops the same traffic routed back through the gateway.
func TestFunctionalNoICCBlocksRoutedHairpin(t *testing.T) {
	h := newTestHost(t)
	var fw *Firewall
	do(t, h.ns, func() (err error) {
		fw, err = New()
		return err
	})
	for _, icc := range []bool{true, false} {
		name := "vxb-icc" + strconv.FormatBool(icc)[:1]
		third := map[bool]string{true: "6", false: "7"}[icc]
		gw := "10.20." + third + ".1"
		h.bridge(name, gw+"/24")
		n := Network{ID: name, Bridge: name, Subnets: []netip.Prefix{prefix("10.20." + third + ".0/24")}, ICC: icc}
		do(t, h.ns, func() error { return fw.EnsureNetwork(n) })
		e1 := endpoint{name: "e1", addr: "10.20." + third + ".2"}
		e1.ns = h.container("ve1"+third, name, e1.addr+"/24", gw)
		e2 := endpoint{name: "e2", addr: "10.20." + third + ".3"}
		e2.ns = h.container("ve2"+third, name, e2.addr+"/24", gw)
		e2.port = serve(t, e2.ns)
		if !icc { // what package bridge does for icc=false
			for _, port := range []string{"ve1" + third, "ve2" + third} {
				must(t, h.ns.Handle().LinkSetIsolated(mustLink(t, h.ns, port), true))
			}
			requireBlocked(t, e1, e2) // straight across the bridge
		}
		// Both send their traffic for the other to the gateway instead of
		// straight across (replies too, or L2 isolation would drop them).
		for _, e := range [][2]endpoint{{e1, e2}, {e2, e1}} {
			must(t, e[0].ns.Handle().RouteAdd(&netlink.Route{
				LinkIndex: mustLink(t, e[0].ns, "eth0").Attrs().Index,
				Dst:       &net.IPNet{IP: net.ParseIP(e[1].addr), Mask: net.CIDRMask(32, 32)},
				Gw:        net.ParseIP(gw),
			}))
		}
		if icc {
			requireReach(t, e1, e2, e1.addr)
		} else {
			requireBlocked(t, e1, e2)
		}
	}
}

func mustLink(t *testing.T, ns *nstest.NS, name string) netlink.Link {
	t.Helper()
	l, err := ns.Handle().LinkByName(name)
	must(t, err)
	return l
}

func mustAddr(t *testing.T, cidr string) *netlink.Addr {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	must(t, err)
	return a
}
