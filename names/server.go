package names

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/vxbridge/vxbridge/peers"
)

// Bounds of the server: what one query may cost, and how many may be under
// way at once, in all and from one sender. A flood from a container costs
// at most maxInFlightPerSource goroutines and sockets; its queries beyond
// are dropped (clients retry), and the other containers keep their places.
const (
	forwardTimeout       = 5 * time.Second  // an upstream's answer, as resolv.conf's default (ServerConfig)
	tcpIdle              = 10 * time.Second // a TCP client's next query
	maxInFlight          = 256              // UDP queries being answered or forwarded
	maxInFlightPerSource = 32               // of those, from one address
	maxTCPConns          = 64               // TCP clients at once
	maxTCPConnsPerSource = 8                // of those, from one address
	queriesPerSec        = 500              // one address's rate, UDP and TCP together
	queriesBurst         = 1000             // and what it may send at once beyond it
)

// Directory finds the names of a container's network by its address, nil
// for an address of no cross-host network. It takes no lock.
type Directory interface {
	Book(src netip.Addr) Book
}

// FromPeers is the Directory of package peers' snapshots.
func FromPeers(m *peers.Manager) Directory { return peersDirectory{m} }

type peersDirectory struct{ m *peers.Manager }

func (d peersDirectory) Book(src netip.Addr) Book {
	if n := d.m.NamesFor(src); n != nil {
		return n
	}
	return nil // a nil *peers.Names in an interface would not be nil
}

// OrigDst tells where a redirected flow was sent before the firewall
// turned it to the server: the upstream resolver. local and remote are the
// flow as the server sees it; proto is "udp" or "tcp". A flow that was not
// redirected is an error: the server answers only what it intercepted.
type OrigDst interface {
	OrigDst(proto string, local, remote netip.AddrPort) (netip.AddrPort, error)
}

// Stats counts what the server did since it started.
type Stats struct {
	Answered  uint64 // queries answered from the names of other hosts
	Forwarded uint64 // queries passed on to their upstream and answered by it
	Failed    uint64 // queries passed on whose upstream did not answer
	Dropped   uint64 // queries dropped: not redirected, or too many at once
}

// Server answers the DNS queries the firewall redirects to it from
// cross-host networks' containers: the names of other hosts' containers of
// the same network from their records, everything else passed on unchanged
// to the upstream it was sent to.
type Server struct {
	dir       Directory
	orig      OrigDst
	log       *slog.Logger
	udp       []*packetConn
	tcp       []net.Listener
	udpPlaces *places
	tcpPlaces *places
	rates     *rates
	wait      time.Duration // for an upstream's answer
	dial      func(network, addr string, timeout time.Duration) (net.Conn, error)
	wg        sync.WaitGroup

	answered, forwarded, failed, dropped atomic.Uint64
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Addrs are the addresses to listen on, UDP and TCP, each with the
	// port the firewall redirects to (0.0.0.0:P and [::]:P in service).
	Addrs     []netip.AddrPort
	Directory Directory
	OrigDst   OrigDst
	Logger    *slog.Logger
	// ForwardTimeout bounds the wait for an upstream (default 5s).
	ForwardTimeout time.Duration
	// Dial opens the connection to an upstream ("udp" or "tcp"); default
	// net.DialTimeout, in the process's namespace (the host's).
	Dial func(network, addr string, timeout time.Duration) (net.Conn, error)
}

// Listen opens the server's sockets; Serve answers on them.
func Listen(cfg ServerConfig) (_ *Server, retErr error) {
	s := &Server{dir: cfg.Directory, orig: cfg.OrigDst, log: cfg.Logger,
		udpPlaces: newPlaces(maxInFlight, maxInFlightPerSource), tcpPlaces: newPlaces(maxTCPConns, maxTCPConnsPerSource),
		rates: newRates(queriesPerSec, queriesBurst),
		wait:  cfg.ForwardTimeout}
	if s.wait <= 0 {
		s.wait = forwardTimeout
	}
	if s.dial = cfg.Dial; s.dial == nil {
		s.dial = net.DialTimeout
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	defer func() {
		if retErr != nil {
			s.close()
		}
	}()
	for _, a := range cfg.Addrs {
		pc, err := listenPacket(a)
		if err != nil {
			return nil, fmt.Errorf("names: listen on udp %s: %w", a, err)
		}
		s.udp = append(s.udp, pc)
		ln, err := net.Listen(tcpNetwork(a), a.String())
		if err != nil {
			return nil, fmt.Errorf("names: listen on tcp %s: %w", a, err)
		}
		s.tcp = append(s.tcp, ln)
	}
	return s, nil
}

func tcpNetwork(a netip.AddrPort) string {
	if a.Addr().Is4() {
		return "tcp4"
	}
	return "tcp6"
}

// Addrs returns the addresses the server listens on (their ports chosen
// when asked for 0), UDP then TCP.
func (s *Server) Addrs() (udp, tcp []netip.AddrPort) {
	for _, pc := range s.udp {
		udp = append(udp, pc.localAddr())
	}
	for _, ln := range s.tcp {
		tcp = append(tcp, ln.Addr().(*net.TCPAddr).AddrPort())
	}
	return udp, tcp
}

// Stats returns the counts so far.
func (s *Server) Stats() Stats {
	return Stats{Answered: s.answered.Load(), Forwarded: s.forwarded.Load(), Failed: s.failed.Load(), Dropped: s.dropped.Load()}
}

// Serve answers until ctx ends, then closes the sockets and waits for the
// queries under way.
func (s *Server) Serve(ctx context.Context) {
	for _, pc := range s.udp {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.serveUDP(pc) }()
	}
	for _, ln := range s.tcp {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.serveTCP(ln) }()
	}
	<-ctx.Done()
	s.close()
	s.wg.Wait()
}

func (s *Server) close() {
	for _, pc := range s.udp {
		pc.Close()
	}
	for _, ln := range s.tcp {
		ln.Close()
	}
}

// allowed says whether src is within its query rate, or counts the query
// dropped.
func (s *Server) allowed(src netip.Addr) bool {
	if s.rates.allow(src, time.Now()) {
		return true
	}
	s.dropped.Add(1)
	return false
}

// acquire takes a place for one query from src, or counts it dropped.
func (s *Server) acquire(p *places, src netip.Addr) bool {
	if p.take(src) {
		return true
	}
	s.dropped.Add(1)
	return false
}

// decide answers raw from the names of the sender's network, or returns
// nil: pass it on. A message that does not parse is passed on unchanged,
// as everything vxbridge does not answer.
func (s *Server) decide(raw []byte, from netip.Addr, udp bool) []byte {
	q := new(dns.Msg)
	if err := q.Unpack(raw); err != nil {
		return nil
	}
	r := answer(q, s.dir.Book(from))
	if r == nil {
		return nil
	}
	if udp {
		r.Truncate(udpLimit(q))
	}
	out, err := r.Pack()
	if err != nil {
		return nil
	}
	s.answered.Add(1)
	return out
}

func (s *Server) serveUDP(pc *packetConn) {
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, local, remote, err := pc.read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("names: udp read", "err", err)
			continue
		}
		if !s.allowed(remote.Addr()) || !s.acquire(s.udpPlaces, remote.Addr()) {
			continue
		}
		raw := append([]byte(nil), buf[:n]...)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.udpPlaces.give(remote.Addr())
			s.handleUDP(pc, raw, local, remote)
		}()
	}
}

func (s *Server) handleUDP(pc *packetConn, raw []byte, local, remote netip.AddrPort) {
	up, err := s.orig.OrigDst("udp", local, remote)
	if err != nil {
		s.dropped.Add(1)
		s.log.Debug("names: a query that was not redirected", "from", remote, "err", err)
		return
	}
	out := s.decide(raw, remote.Addr(), true)
	if out == nil {
		if out, err = s.forwardUDP(up, raw); err != nil {
			s.failed.Add(1)
			s.log.Debug("names: upstream did not answer", "upstream", up, "err", err)
			if out = serverFailure(raw); out == nil {
				return
			}
		} else {
			s.forwarded.Add(1)
		}
	}
	if err := pc.write(out, local, remote); err != nil {
		s.log.Debug("names: udp reply", "to", remote, "err", err)
	}
}

// serverFailure is the SERVFAIL answer to a query whose upstream did not
// answer, as a resolver gives when its own upstream fails: the client
// (docker's embedded DNS) moves on at once instead of waiting out its own
// timeout. Nil for what does not parse: it gets nothing.
func serverFailure(raw []byte) []byte {
	q := new(dns.Msg)
	if q.Unpack(raw) != nil || q.Response {
		return nil
	}
	r := new(dns.Msg)
	r.SetRcode(q, dns.RcodeServerFailure)
	r.RecursionAvailable = true
	out, err := r.Pack()
	if err != nil {
		return nil
	}
	return out
}

// forwardUDP sends raw to the upstream from the host and returns its reply.
func (s *Server) forwardUDP(up netip.AddrPort, raw []byte) ([]byte, error) {
	c, err := s.dial("udp", up.String(), s.wait)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(s.wait)); err != nil {
		return nil, err
	}
	if _, err := c.Write(raw); err != nil {
		return nil, err
	}
	buf := make([]byte, dns.MaxMsgSize)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func (s *Server) serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("names: tcp accept", "err", err)
			time.Sleep(10 * time.Millisecond) // out of descriptors: do not spin
			continue
		}
		src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		if !s.acquire(s.tcpPlaces, src) {
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.tcpPlaces.give(src)
			s.handleTCP(c)
		}()
	}
}

// handleTCP answers one client's queries in turn, passing on those it
// does not answer over one connection to their upstream.
func (s *Server) handleTCP(c net.Conn) {
	defer c.Close()
	local, remote := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
	up, err := s.orig.OrigDst("tcp", local, remote)
	if err != nil {
		s.dropped.Add(1)
		return
	}
	client := &dns.Conn{Conn: c}
	var upstream *dns.Conn
	defer func() {
		if upstream != nil {
			upstream.Close()
		}
	}()
	buf := make([]byte, dns.MaxMsgSize)
	for {
		if c.SetDeadline(time.Now().Add(tcpIdle)) != nil {
			return
		}
		n, err := client.Read(buf)
		if err != nil || !s.allowed(remote.Addr().Unmap()) {
			return // a client beyond its rate loses its connection
		}
		out := s.decide(buf[:n], remote.Addr(), false)
		if out == nil {
			if out, upstream, err = s.forwardTCP(upstream, up, buf[:n]); err != nil {
				s.failed.Add(1)
				if out = serverFailure(buf[:n]); out != nil {
					client.Write(out) // the connection ends here
				}
				return
			}
			s.forwarded.Add(1)
		}
		if _, err := client.Write(out); err != nil {
			return
		}
	}
}

// forwardTCP sends raw over conn (dialled to up first if nil) and returns
// the upstream's reply and the connection to use next.
func (s *Server) forwardTCP(conn *dns.Conn, up netip.AddrPort, raw []byte) ([]byte, *dns.Conn, error) {
	if conn == nil {
		c, err := s.dial("tcp", up.String(), s.wait)
		if err != nil {
			return nil, nil, err
		}
		conn = &dns.Conn{Conn: c}
	}
	if err := conn.SetDeadline(time.Now().Add(s.wait)); err != nil {
		return nil, conn, err
	}
	if _, err := conn.Write(raw); err != nil {
		return nil, conn, err
	}
	buf := make([]byte, dns.MaxMsgSize)
	n, err := conn.Read(buf)
	if err != nil {
		return nil, conn, err
	}
	return buf[:n], conn, nil
}
