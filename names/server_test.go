package names

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fixedDir answers every source from one book, except "10.99.0.0/16".
type fixedDir struct{ b Book }

func (d fixedDir) Book(src netip.Addr) Book {
	if netip.MustParsePrefix("10.99.0.0/16").Contains(src) {
		return nil
	}
	return d.b
}

// fakeOrig says every flow was sent to up, unless refuse.
type fakeOrig struct {
	mu     sync.Mutex
	up     netip.AddrPort
	refuse bool
	asked  []string
}

func (o *fakeOrig) OrigDst(proto string, local, remote netip.AddrPort) (netip.AddrPort, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.asked = append(o.asked, proto+" "+remote.String()+"->"+local.String())
	if o.refuse {
		return netip.AddrPort{}, errNotRedirected
	}
	return o.up, nil
}

// upstream is a resolver on loopback that answers every A query with
// 192.0.2.53 and counts what it got.
type upstream struct {
	mu    sync.Mutex
	names []string
	addr  netip.AddrPort
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	ln, err := net.Listen("tcp4", u.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	serveUpstream(t, u, pc, ln)
	return u
}

// serveUpstream answers on pc and ln as upstream u.
func serveUpstream(t *testing.T, u *upstream, pc net.PacketConn, ln net.Listener) {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		u.mu.Lock()
		u.names = append(u.names, q.Question[0].Name)
		u.mu.Unlock()
		r := new(dns.Msg)
		r.SetReply(q)
		r.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A: net.IPv4(192, 0, 2, 53)}}
		w.WriteMsg(r)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown() })
	}
}

func (u *upstream) got() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.names...)
}

func startServer(t *testing.T, orig OrigDst) *Server {
	t.Helper()
	return startServerWaiting(t, orig, time.Second)
}

// startServerWaiting starts a server that waits up to wait for upstreams.
func startServerWaiting(t *testing.T, orig OrigDst, wait time.Duration) *Server {
	t.Helper()
	s, err := Listen(ServerConfig{Addrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		Directory: fixedDir{book}, OrigDst: orig, ForwardTimeout: wait})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func exchange(t *testing.T, proto string, to netip.AddrPort, name string) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: proto, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(query(name, dns.TypeA), to.String())
	if err != nil {
		t.Fatalf("%s query %s: %v", proto, name, err)
	}
	return r
}

func firstA(r *dns.Msg) string {
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String()
		}
	}
	return ""
}

// TestServerAnswersOrPassesOn: the names of other hosts are answered, the
// rest reaches the upstream the query was sent to, over UDP and TCP.
func TestServerAnswersOrPassesOn(t *testing.T) {
	up := startUpstream(t)
	orig := &fakeOrig{up: up.addr}
	s := startServer(t, orig)
	udp, tcp := s.Addrs()
	for _, c := range []struct {
		proto string
		to    netip.AddrPort
	}{{"udp", udp[0]}, {"tcp", tcp[0]}} {
		if got := firstA(exchange(t, c.proto, c.to, "web.xnet.")); got != "10.90.0.5" {
			t.Errorf("%s web.xnet = %q, want vxbridge's answer 10.90.0.5", c.proto, got)
		}
		if got := firstA(exchange(t, c.proto, c.to, "example.com.")); got != "192.0.2.53" {
			t.Errorf("%s example.com = %q, want the upstream's answer", c.proto, got)
		}
	}
	if got := up.got(); len(got) != 2 || got[0] != "example.com." {
		t.Errorf("upstream got %v, want example.com. twice and nothing else", got)
	}
	st := s.Stats()
	if st.Answered != 2 || st.Forwarded != 2 || st.Failed != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
	orig.mu.Lock()
	defer orig.mu.Unlock()
	if len(orig.asked) != 4 || orig.asked[0][:4] != "udp " {
		t.Errorf("conntrack asked %v", orig.asked)
	}
}

// TestServerDropsWhatWasNotRedirected: a query sent to the server's port
// directly (no conntrack entry of a redirect) is neither answered nor
// forwarded: the server is no open resolver.
func TestServerDropsWhatWasNotRedirected(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, &fakeOrig{up: up.addr, refuse: true})
	udp, _ := s.Addrs()
	c := &dns.Client{Net: "udp", Timeout: 200 * time.Millisecond}
	if _, _, err := c.Exchange(query("example.com.", dns.TypeA), udp[0].String()); err == nil {
		t.Fatal("a query that was not redirected got an answer")
	}
	if got := up.got(); len(got) != 0 {
		t.Fatalf("upstream got %v", got)
	}
	if s.Stats().Dropped != 1 {
		t.Fatalf("stats %+v, want one dropped", s.Stats())
	}
}

// TestServerUpstreamDown: an upstream that does not answer is counted, and
// the client hears SERVFAIL once its timeout passed.
func TestServerUpstreamDown(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0") // never answers
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	s := startServer(t, &fakeOrig{up: pc.LocalAddr().(*net.UDPAddr).AddrPort()})
	udp, _ := s.Addrs()
	c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
	start := time.Now()
	r, _, err := c.Exchange(query("example.com.", dns.TypeA), udp[0].String())
	if err != nil || r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("answer %v (%v), want SERVFAIL once the upstream timed out", r, err)
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("SERVFAIL after %s, before the upstream's timeout", d)
	}
	if st := s.Stats(); st.Failed != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The name of another host still answers meanwhile.
	if got := firstA(exchange(t, "udp", udp[0], "web.")); got != "10.90.0.5" {
		t.Fatalf("web = %q", got)
	}
}

func TestServerTruncatesToTheClientsSize(t *testing.T) {
	many := mapBook{names: map[string][]netip.Addr{}, rev: map[netip.Addr]string{}}
	for i := range 60 {
		many.names["big"] = append(many.names["big"], netip.AddrFrom4([4]byte{10, 90, 1, byte(i)}))
	}
	s, err := Listen(ServerConfig{Addrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		Directory: fixedDir{many}, OrigDst: &fakeOrig{up: netip.MustParseAddrPort("127.0.0.1:9")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Serve(ctx)
	udp, tcp := s.Addrs()
	c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
	r, _, err := c.Exchange(query("big.", dns.TypeA), udp[0].String())
	if err != nil {
		t.Fatal(err)
	}
	if r == nil || !r.Truncated || len(r.Answer) >= 60 {
		t.Fatalf("udp answer of 60 addresses: %v, want it truncated", r)
	}
	if rt := exchange(t, "tcp", tcp[0], "big."); len(rt.Answer) != 60 {
		t.Fatalf("tcp answer has %d addresses, want 60", len(rt.Answer))
	}
}

// TestServerFloodIsBounded: a container flooding queries whose upstream
// never answers holds at most its share of the places (each a goroutine
// and a socket for the forward timeout), UDP and TCP; the rest are dropped
// and counted, and another container's query is still answered.
func TestServerFloodIsBounded(t *testing.T) {
	hole, err := net.ListenPacket("udp4", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	base := runtime.NumGoroutine()
	s := startServerWaiting(t, &fakeOrig{up: hole.LocalAddr().(*net.UDPAddr).AddrPort()}, 3*time.Second)
	udp, tcp := s.Addrs()
	const sent = 4 * maxInFlight
	floodUDP(t, udp[0], sent)
	for range 2 * maxTCPConns {
		if tc, err := net.Dial("tcp4", tcp[0].String()); err == nil {
			defer tc.Close()
		}
	}
	time.Sleep(200 * time.Millisecond) // the server has read them all, the upstream has not answered
	n := runtime.NumGoroutine() - base
	t.Logf("%d UDP queries and %d TCP clients from one address: %d goroutines, %+v", sent, 2*maxTCPConns, n, s.Stats())
	if limit := maxInFlightPerSource + maxTCPConnsPerSource + 16; n > limit {
		t.Fatalf("%d goroutines for one sender's flood, want at most %d", n, limit)
	}
	if st := s.Stats(); st.Failed != 0 || st.Dropped < sent/2 {
		t.Fatalf("stats %+v, want none failed yet and most of the %d queries dropped", st, sent)
	}
	// Another container (another address) is answered meanwhile.
	c := &dns.Client{Net: "udp", Timeout: time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}}}
	r, _, err := c.Exchange(query("web.", dns.TypeA), udp[0].String())
	if err != nil || firstA(r) != "10.90.0.5" {
		t.Fatalf("web from another sender during the flood = %v (%v)", r, err)
	}
}

// TestServerHoldsASenderToItsRate: a container asking for names the server
// answers itself (no upstream to wait for, so no place stays taken) is
// answered at most its burst and rate; the rest costs a read and is
// dropped; another container is still answered.
func TestServerHoldsASenderToItsRate(t *testing.T) {
	s := startServer(t, &fakeOrig{up: netip.MustParseAddrPort("127.0.0.1:9")})
	udp, _ := s.Addrs()
	const sent = 4 * queriesBurst
	start := time.Now()
	floodUDPName(t, udp[0], sent, "web.")
	time.Sleep(100 * time.Millisecond) // the server has read them all
	st := s.Stats()
	allowed := queriesBurst + int(time.Since(start).Seconds()*queriesPerSec) + 1
	t.Logf("%d queries from one address in %s: %+v, allowed %d", sent, time.Since(start).Round(time.Millisecond), st, allowed)
	if int(st.Answered) > allowed || st.Dropped == 0 {
		t.Fatalf("stats %+v, want at most %d answered and the rest dropped", st, allowed)
	}
	c := &dns.Client{Net: "udp", Timeout: time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}}}
	r, _, err := c.Exchange(query("web.", dns.TypeA), udp[0].String())
	if err != nil || firstA(r) != "10.90.0.5" {
		t.Fatalf("web from another sender after the flood = %v (%v)", r, err)
	}
}

// floodUDP sends n queries from one socket, in bursts the server's socket
// buffer holds.
func floodUDP(t *testing.T, to netip.AddrPort, n int) {
	floodUDPName(t, to, n, "example.com.")
}

func floodUDPName(t *testing.T, to netip.AddrPort, n int, name string) {
	c, err := net.Dial("udp4", to.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, _ := query(name, dns.TypeA).Pack()
	for i := range n {
		if _, err := c.Write(raw); err != nil {
			t.Fatal(err)
		}
		if i%32 == 31 {
			time.Sleep(time.Millisecond)
		}
	}
}
