package portproxy

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a log sink safe for the relay's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitClients waits until the relay of m counts n clients.
func waitClients(t *testing.T, mgr *Manager, m Mapping, n int) {
	t.Helper()
	mgr.mu.Lock()
	r := mgr.held[m.key()].(*tcpRelay)
	mgr.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		got := r.clients
		r.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay counts %d clients, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A port relays at most maxTCP connections at once: further clients are
// reset at once and the refusals are logged once per interval, with their
// count; when a connection ends, a new one is relayed again.
func TestTCPConnectionsCapped(t *testing.T) {
	var logs lockedBuffer
	mgr := New(slog.New(slog.NewTextHandler(&logs, nil)))
	mgr.maxTCP = 2
	defer mgr.Close()
	m := Mapping{Proto: "tcp", Host: loopback(freePort(t, "tcp")), Target: tcpBackend(t, "c1")}
	if err := mgr.Reserve(m); err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	for range 2 { // open, never half-closed: the backend keeps reading
		c, err := net.Dial("tcp4", m.Host.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	waitClients(t, mgr, m, 2)
	for i := range 3 {
		start := time.Now()
		got, err := askTCP(m.Host, "ping")
		if got != "" || time.Since(start) > time.Second {
			t.Errorf("client %d beyond the cap: answered %q, %v after %v; want refused at once", i, got, err, time.Since(start))
		}
	}
	if n := strings.Count(logs.String(), "refusing a tcp connection"); n != 1 || !strings.Contains(logs.String(), "max=2") {
		t.Errorf("want one log line for the refusals, got:\n%s", logs.String())
	}
	held[0].Close()
	waitClients(t, mgr, m, 1)
	if got, err := askTCP(m.Host, "ping"); err != nil || got != "c1 got ping" {
		t.Errorf("below the cap again: %q, %v", got, err)
	}
}

// UDP flows beyond the cap are dropped, and said so.
func TestUDPFlowsCapped(t *testing.T) {
	var logs lockedBuffer
	mgr := New(slog.New(slog.NewTextHandler(&logs, nil)))
	mgr.maxUDP = 1
	defer mgr.Close()
	m := Mapping{Proto: "udp", Host: loopback(freePort(t, "udp")), Target: udpBackend(t, "c1")}
	if err := mgr.Reserve(m); err != nil {
		t.Fatal(err)
	}
	var answers []string
	for range 2 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got, _ := askUDP(c, m.Host, "ping")
		answers = append(answers, got)
	}
	if !strings.HasPrefix(answers[0], "c1 got ping") || answers[1] != "" {
		t.Errorf("answers %q: want the first client relayed, the second dropped", answers)
	}
	if !strings.Contains(logs.String(), "refusing a udp client") {
		t.Errorf("no log line for the dropped client:\n%s", logs.String())
	}
}
