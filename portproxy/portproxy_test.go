package portproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests use loopback ports the kernel hands out; no fixed numbers.

// freePort returns a port that was free on 127.0.0.1 for proto a moment ago.
func freePort(t *testing.T, proto string) uint16 {
	t.Helper()
	var a net.Addr
	switch proto {
	case "udp":
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a = c.LocalAddr()
		c.Close()
	default:
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a = l.Addr()
		l.Close()
	}
	return netip.MustParseAddrPort(a.String()).Port()
}

// tcpBackend stands for a container: it reads the request to EOF and
// answers "NAME got REQUEST".
func tcpBackend(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, _ := io.ReadAll(c)
				io.WriteString(c, name+" got "+string(req))
			}()
		}
	}()
	return netip.MustParseAddrPort(l.Addr().String())
}

func udpBackend(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort([]byte(name+" got "+string(buf[:n])+" from "+from.String()), from)
		}
	}()
	return netip.MustParseAddrPort(c.LocalAddr().String())
}

// askTCP sends req, half-closes, and returns the whole answer.
func askTCP(addr netip.AddrPort, req string) (string, error) {
	c, err := net.DialTimeout("tcp4", addr.String(), 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return "", err
	}
	_ = c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	return string(b), err
}

func askUDP(c *net.UDPConn, to netip.AddrPort, req string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.WriteToUDPAddrPort([]byte(req), to); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

func loopback(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
}

func TestTCPReservedAndRelayed(t *testing.T) {
	mgr := New(nil)
	defer mgr.Close()
	m := Mapping{Proto: "tcp", Host: loopback(freePort(t, "tcp")), Target: tcpBackend(t, "c1")}
	if err := mgr.Reserve(m); err != nil {
		t.Fatal(err)
	}
	// The request is passed on whole and the half-close with it.
	if got, err := askTCP(m.Host, "ping"); err != nil || got != "c1 got ping" {
		t.Errorf("relay answered %q, %v; want %q", got, err, "c1 got ping")
	}
	if l, err := net.Listen("tcp4", m.Host.String()); err == nil {
		l.Close()
		t.Errorf("another process could listen on the reserved %s", m.Host)
	}
	if err := mgr.Reserve(m); err != nil {
		t.Errorf("reserving a held port again: %v", err)
	}
	// Held for another target: the relay follows.
	m.Target = tcpBackend(t, "c2")
	if err := mgr.Reserve(m); err != nil {
		t.Fatal(err)
	}
	if got, err := askTCP(m.Host, "ping"); err != nil || got != "c2 got ping" {
		t.Errorf("after retargeting the relay answered %q, %v", got, err)
	}
	if held := mgr.Held(); len(held) != 1 || held[0] != m {
		t.Errorf("Held() = %v, want [%v]", held, m)
	}
	mgr.Release(m)
	l, err := net.Listen("tcp4", m.Host.String())
	if err != nil {
		t.Fatalf("port still taken after Release: %v", err)
	}
	l.Close()
	mgr.Release(m) // not held: nothing to do
}

func TestReserveRefusesPortOfAnotherProcess(t *testing.T) {
	mgr := New(nil)
	defer mgr.Close()
	l, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := netip.MustParseAddrPort(l.Addr().String()).Port()
	for _, host := range []netip.AddrPort{loopback(port), netip.AddrPortFrom(netip.IPv4Unspecified(), port)} {
		err := mgr.Reserve(Mapping{Proto: "tcp", Host: host, Target: loopback(1)})
		if !errors.Is(err, ErrInUse) || !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("Reserve(%s) with a listener on 0.0.0.0 = %v, want ErrInUse", host, err)
		}
	}
	if held := mgr.Held(); len(held) != 0 {
		t.Errorf("a failed Reserve holds %v", held)
	}
}

func TestReleaseEndsRelayedConnections(t *testing.T) {
	mgr := New(nil)
	defer mgr.Close()
	// A backend that never answers, so the connection stays open.
	backend, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	m := Mapping{Proto: "tcp", Host: loopback(freePort(t, "tcp")), Target: netip.MustParseAddrPort(backend.Addr().String())}
	if err := mgr.Reserve(m); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp4", m.Host.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "x") // wait for the relay to be up
	time.Sleep(100 * time.Millisecond)
	mgr.Release(m)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := bufio.NewReader(c).ReadByte(); err == nil || errors.Is(err, syscall.ETIMEDOUT) || strings.Contains(err.Error(), "timeout") {
		t.Errorf("relayed connection after Release: read = %v, want it closed", err)
	}
}

func TestUDPRelayedPerClient(t *testing.T) {
	mgr := New(nil)
	defer mgr.Close()
	m := Mapping{Proto: "udp", Host: loopback(freePort(t, "udp")), Target: udpBackend(t, "c1")}
	if err := mgr.Reserve(m); err != nil {
		t.Fatal(err)
	}
	var sources []string
	for i := range 2 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for range 2 { // the second datagram rides the same flow
			got, err := askUDP(c, m.Host, "ping")
			if err != nil || !strings.HasPrefix(got, "c1 got ping from ") {
				t.Fatalf("client %d: relay answered %q, %v", i, got, err)
			}
			sources = append(sources, strings.TrimPrefix(got, "c1 got ping from "))
		}
	}
	if sources[0] != sources[1] || sources[2] != sources[3] || sources[0] == sources[2] {
		t.Errorf("backend saw sources %q: want one per client, stable within a client", sources)
	}
	if c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(m.Host)); err == nil {
		c.Close()
		t.Errorf("another process could bind the reserved udp %s", m.Host)
	}
}

func TestUDPFlowIdlesOut(t *testing.T) {
	mgr := New(nil)
	mgr.udpIdle = 100 * time.Millisecond
	defer mgr.Close()
	m := Mapping{Proto: "udp", Host: loopback(freePort(t, "udp")), Target: udpBackend(t, "c1")}
	if err := mgr.Reserve(m); err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := askUDP(c, m.Host, "ping"); err != nil {
		t.Fatal(err)
	}
	mgr.mu.Lock()
	r := mgr.held[m.key()].(*udpRelay)
	mgr.mu.Unlock()
	deadline := time.Now().Add(2 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.flows)
		r.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d flows still open after the idle time", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got, err := askUDP(c, m.Host, "again"); err != nil || !strings.HasPrefix(got, "c1 got again") {
		t.Errorf("after the flow idled out: %q, %v", got, err)
	}
}

func TestSyncHoldsExactlyWhatIsWanted(t *testing.T) {
	mgr := New(nil)
	defer mgr.Close()
	a := Mapping{Proto: "tcp", Host: loopback(freePort(t, "tcp")), Target: loopback(1)}
	b := Mapping{Proto: "udp", Host: loopback(freePort(t, "udp")), Target: loopback(1)}
	if err := mgr.Sync([]Mapping{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := mgr.Sync([]Mapping{b}); err != nil {
		t.Fatal(err)
	}
	if held := mgr.Held(); len(held) != 1 || held[0] != b {
		t.Errorf("Held() = %v, want [%v]", held, b)
	}
	l, err := net.Listen("tcp4", a.Host.String())
	if err != nil {
		t.Errorf("port of a mapping Sync dropped is still taken: %v", err)
	} else {
		// Taken by someone else now: Sync reports it and keeps the rest.
		defer l.Close()
		if err := mgr.Sync([]Mapping{a, b}); !errors.Is(err, ErrInUse) {
			t.Errorf("Sync with a taken port = %v, want ErrInUse", err)
		}
		if held := mgr.Held(); len(held) != 1 {
			t.Errorf("Held() = %v", held)
		}
	}
}

func TestSCTPReservedWhereTheKernelHasIt(t *testing.T) {
	mgr := New(nil)
	defer mgr.Close()
	m := Mapping{Proto: "sctp", Host: loopback(freePort(t, "tcp")), Target: loopback(1)}
	if err := mgr.Reserve(m); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	if err != nil {
		t.Skipf("no SCTP in this kernel (%v): Reserve succeeded without a socket, as it should", err)
	}
	defer unix.Close(fd)
	if err := bindListen(fd, m.Host); !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("a second SCTP socket on the reserved port: %v, want EADDRINUSE", err)
	}
}

func TestInvalidMappingsRefused(t *testing.T) {
	mgr := New(nil)
	for _, m := range []Mapping{
		{Proto: "icmp", Host: loopback(1000), Target: loopback(1)},
		{Proto: "tcp", Host: loopback(0), Target: loopback(1)},
		{Proto: "tcp", Host: loopback(1000)},
	} {
		if err := mgr.Reserve(m); err == nil || errors.Is(err, ErrInUse) {
			t.Errorf("Reserve(%v) = %v, want a refusal", m, err)
		}
	}
}

func TestParseRange(t *testing.T) {
	if lo, hi, err := parseRange("32768\t60999\n"); err != nil || lo != 32768 || hi != 60999 {
		t.Errorf("parseRange = %d, %d, %v", lo, hi, err)
	}
	for _, bad := range []string{"", "1", "0 10", "10 5", "1 70000", "a b"} {
		if _, _, err := parseRange(bad); err == nil {
			t.Errorf("parseRange(%q) accepted", bad)
		}
	}
	if _, _, err := EphemeralRange(); err != nil {
		t.Errorf("EphemeralRange: %v", err)
	}
}
