package names

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/namespace"
)

// TestRedirectedQueries runs the interception for real, in three test
// namespaces: a "container" (10.90.0.2) whose queries to an upstream
// (198.51.100.1, in an "upstream" namespace) cross a "host" whose nat
// rule, as firewall.Network's NamesPort writes it, redirects them to the
// server. The server finds the upstream in the host's conntrack, answers
// the book's names from the redirect's address (the gateway, un-NATed to
// the upstream's by the kernel), and passes the rest on. Nothing leaves the
// namespaces: the server dials from the host namespace.
func TestRedirectedQueries(t *testing.T) {
	if testing.Short() {
		t.Skip("kernel test")
	}
	host, ctr, up := testNetNS(t, "vxnh"), testNetNS(t, "vxnc"), testNetNS(t, "vxnu")
	for _, c := range [][]string{
		{"link", "add", "gw0", "netns", host, "type", "veth", "peer", "name", "eth0", "netns", ctr},
		{"-n", host, "addr", "add", "10.90.0.1/24", "dev", "gw0"},
		{"-n", host, "link", "set", "gw0", "up"},
		{"-n", ctr, "addr", "add", "10.90.0.2/24", "dev", "eth0"},
		{"-n", ctr, "link", "set", "eth0", "up"},
		{"-n", ctr, "route", "add", "default", "via", "10.90.0.1"},
		{"link", "add", "up0", "netns", host, "type", "veth", "peer", "name", "u0", "netns", up},
		{"-n", host, "addr", "add", "192.0.2.2/24", "dev", "up0"},
		{"-n", host, "link", "set", "up0", "up"},
		{"-n", host, "route", "add", "default", "via", "192.0.2.1"},
		{"-n", up, "addr", "add", "192.0.2.1/24", "dev", "u0"},
		{"-n", up, "link", "set", "u0", "up"},
		{"-n", up, "addr", "add", "198.51.100.1/32", "dev", "lo"},
		{"-n", up, "route", "add", "10.90.0.0/24", "via", "192.0.2.2"},
	} {
		run(t, "ip", c...)
	}
	run(t, "ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	for _, proto := range []string{"udp", "tcp"} {
		run(t, "ip", "netns", "exec", host, "iptables", "-w", "-t", "nat", "-A", "PREROUTING", "!", "-d", "10.90.0.0/24",
			"-i", "gw0", "-p", proto, "-m", proto, "--dport", "53", "-j", "REDIRECT", "--to-ports", "5335")
	}
	hostH := nsHandle(t, host)
	startUpstreamIn(t, nsHandle(t, up), "198.51.100.1:53")
	var ct *Conntrack
	var srv *Server
	if err := namespace.Do(hostH, func() error {
		var err error
		if ct, err = OpenConntrack(); err != nil {
			return err
		}
		srv, err = Listen(ServerConfig{Addrs: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:5335")},
			Directory: fixedDir{book}, OrigDst: ct, ForwardTimeout: 2 * time.Second,
			Dial: func(network, addr string, timeout time.Duration) (c net.Conn, err error) {
				err = namespace.Do(hostH, func() error { c, err = net.DialTimeout(network, addr, timeout); return err })
				return c, err
			}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	ctrH := nsHandle(t, ctr)
	for _, proto := range []string{"udp", "tcp"} {
		for name, want := range map[string]string{"web.xnet.": "10.90.0.5", "example.com.": "192.0.2.53"} {
			var r *dns.Msg
			err := namespace.Do(ctrH, func() error {
				c := &dns.Client{Net: proto, Timeout: 3 * time.Second}
				var err error
				r, _, err = c.Exchange(query(name, dns.TypeA), "198.51.100.1:53")
				return err
			})
			if err != nil || firstA(r) != want {
				t.Errorf("%s %s from the container: %v (%v), want %s", proto, name, r, err, want)
			}
		}
	}
	if st := srv.Stats(); st.Answered != 2 || st.Forwarded != 2 || st.Dropped != 0 {
		t.Errorf("stats %+v, want 2 answered and 2 forwarded", st)
	}
	// Sent to the server's port directly, not redirected: dropped.
	err := namespace.Do(ctrH, func() error {
		c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
		_, _, err := c.Exchange(query("web.xnet.", dns.TypeA), "10.90.0.1:5335")
		return err
	})
	if err == nil {
		t.Error("a query sent to the server's port directly was answered")
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func nsHandle(t *testing.T, name string) netns.NsHandle {
	t.Helper()
	h, err := netns.GetFromPath("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// startUpstreamIn runs the test upstream (startUpstream's answers) on addr
// inside namespace h.
func startUpstreamIn(t *testing.T, h netns.NsHandle, addr string) {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	if err := namespace.Do(h, func() error {
		var err error
		if pc, err = net.ListenPacket("udp4", addr); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	serveUpstream(t, &upstream{}, pc, ln)
}
