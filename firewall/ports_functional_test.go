package firewall

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

// Functional tier for published ports: traffic between namespaces the test
// made, under docker's FORWARD DROP policy with br_netfilter on. Host ports
// are fixed numbers: every namespace here is fresh.

// serveUDP answers each datagram on port of every address of ns with name.
func serveUDP(t *testing.T, ns *nstest.NS, port int, name string) {
	t.Helper()
	var c *net.UDPConn
	do(t, ns, func() (err error) {
		c, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
		return err
	})
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDPAddrPort([]byte(name), from)
		}
	}()
}

// askUDP sends one datagram from ns, from source port sport, to addr:port
// and returns the answer.
func askUDP(ns *nstest.NS, sport int, addr string, port int) (string, error) {
	var answer string
	err := ns.Do(func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: sport})
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(allowWait))
		if _, err := c.WriteToUDP([]byte("?"), &net.UDPAddr{IP: net.ParseIP(addr), Port: port}); err != nil {
			return err
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		answer = string(buf[:n])
		return err
	})
	return answer, err
}

// udpFlowToC1 starts a UDP flow from out to hostIP:5353, published to c1
// (p), and returns the question it asks and p with the port moved to c2.
func udpFlowToC1(t *testing.T, out, c1, c2 endpoint, hostIP string, p Ports) (func() string, Ports) {
	t.Helper()
	serveUDP(t, c1.ns, 53, "c1")
	serveUDP(t, c2.ns, 53, "c2")
	ask := func() string {
		t.Helper()
		got, err := askUDP(out.ns, 40000, hostIP, 5353)
		if err != nil {
			t.Fatalf("udp outside -> %s:5353: %v", hostIP, err)
		}
		return got
	}
	if got := ask(); got != "c1" {
		t.Fatalf("udp answered by %q, want c1", got)
	}
	moved := p
	moved.Mappings = []PortMapping{{Proto: "udp", HostIP: netip.IPv4Unspecified(), HostPort: 5353, ContainerIP: addr(c2.addr), ContainerPort: 53}}
	return ask, moved
}

func TestFunctionalPublishedPorts(t *testing.T) {
	h := newTestHost(t)
	var fw *Firewall
	do(t, h.ns, func() (err error) {
		fw, err = New()
		return err
	})
	n := Network{ID: "pub", Bridge: "vxb-pub", Subnets: []netip.Prefix{prefix("10.30.1.0/24")}, Masquerade: true, ICC: true}
	h.bridge("vxb-pub", "10.30.1.1/24")
	do(t, h.ns, func() error { return fw.EnsureNetwork(n) })
	c1 := endpoint{name: "c1", addr: "10.30.1.2", ns: h.container("vc1", "vxb-pub", "10.30.1.2/24", "10.30.1.1")}
	c2 := endpoint{name: "c2", addr: "10.30.1.3", ns: h.container("vc2", "vxb-pub", "10.30.1.3/24", "10.30.1.1")}
	c1.port = serve(t, c1.ns)
	out := endpoint{name: "outside", addr: "198.51.100.2", ns: h.container("uplink", "", "198.51.100.2/24", "")}
	must(t, h.ns.Handle().AddrAdd(mustLink(t, h.ns, "uplink"), mustAddr(t, "198.51.100.1/24")))
	const hostIP, hostPort = "198.51.100.1", 8080
	published := endpoint{name: "published port", addr: hostIP, port: hostPort}
	loopback := endpoint{name: "published port on loopback", addr: "127.0.0.1", port: hostPort}
	host := endpoint{name: "host", ns: h.ns}

	p := Ports{NetworkID: n.ID, EndpointID: "e1", Bridge: n.Bridge, Subnets: n.Subnets, Mappings: []PortMapping{
		{Proto: "tcp", HostIP: netip.IPv4Unspecified(), HostPort: hostPort, ContainerIP: addr(c1.addr), ContainerPort: uint16(c1.port)},
		{Proto: "udp", HostIP: netip.IPv4Unspecified(), HostPort: 5353, ContainerIP: addr(c1.addr), ContainerPort: 53},
	}}
	do(t, h.ns, func() error { return fw.EnsurePorts(p) })
	requireReach(t, out, published, out.addr) // the client's address is kept
	requireReach(t, host, published, "")      // the host's own traffic to its address
	requireReach(t, c2, published, "10.30.1.1")
	if _, err := dial(h.ns, loopback.addr, loopback.port, blockWait); err == nil {
		t.Errorf("host -> 127.0.0.1:%d reached the container: loopback must be left to the proxy", hostPort)
	}
	// A container reaching its own published port: with br_netfilter the
	// DNAT'ed frame goes back out of the port it came in by.
	must(t, h.ns.Handle().LinkSetHairpin(mustLink(t, h.ns, "vc1"), true))
	requireReach(t, c1, published, "10.30.1.1")

	// Operators' rules in DOCKER-USER win over the published port.
	drop := []string{"-w", "-I", "DOCKER-USER", "-d", c1.addr, "-p", "tcp", "-j", "DROP"}
	run(t, h.ns, "iptables", drop...)
	requireBlocked(t, out, published)
	drop[1] = "-D"
	run(t, h.ns, "iptables", drop...)
	requireReach(t, out, published, out.addr)

	// UDP: a flow keeps its conntrack entry as long as packets come, so
	// moving the host port to c2 without a flush keeps sending it to c1.
	ask, moved := udpFlowToC1(t, out, c1, c2, hostIP, p)
	// Control: rules flushed behind vxbridge's back (an admin's iptables
	// -F) flush no conntrack entry, so the flow sticks to c1.
	run(t, h.ns, "iptables", "-w", "-t", "nat", "-F", ChainDNAT)
	do(t, h.ns, func() error { return fw.EnsurePorts(moved) })
	if got := ask(); got != "c1" {
		t.Fatalf("control: without a conntrack flush the flow went to %q; the checks below would prove nothing", got)
	}
	do(t, h.ns, func() error { return fw.RemovePorts(p) }) // flushes p's flows, its rules gone or not, then...
	do(t, h.ns, func() error { return fw.EnsurePorts(moved) })
	if got := ask(); got != "c2" {
		t.Errorf("after RemovePorts the flow went to %q, want c2", got)
	}
	// A reconcile dropping rules no record claims (what a crash between
	// the record and the rules leaves) flushes their flows too.
	do(t, h.ns, func() error { return fw.Reconcile([]Network{n}, nil, ownsAll) })
	do(t, h.ns, func() error { return fw.EnsurePorts(p) })
	if got := ask(); got != "c1" {
		t.Errorf("after a reconcile dropped c2's rules the flow went to %q, want c1", got)
	}
	do(t, h.ns, func() error { return fw.RemovePorts(p) })
	do(t, h.ns, func() error { return fw.EnsurePorts(moved) })
	do(t, h.ns, func() error { return fw.RemovePorts(moved) })
	if _, err := dial(out.ns, hostIP, hostPort, blockWait); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("outside -> %s:%d after RemovePorts: %v, want refused by the host itself", hostIP, hostPort, err)
	}
}
