// Package portproxy holds a socket on every published host port and relays
// what reaches it to the container.
//
// The kernel (vxbridge's DNAT rules) carries a published port's traffic
// before any socket sees it, so the socket here serves two other ends:
//
//   - It reserves the port. A process that later tries to listen on it gets
//     "address already in use" instead of silently never seeing a packet,
//     and a publish that finds the port taken by a process fails at once
//     (docker's bridge driver keeps such a socket too).
//   - It relays what the kernel does not DNAT: connections to 127.0.0.1 or
//     ::1 (DNAT'ing loopback needs route_localnet, which would open the
//     host's loopback services to the containers), and IPv6 host ports of a
//     container that has no IPv6 address. Like docker-proxy, the container
//     then sees the connection come from its gateway.
//
// The relay lives in the plugin process: while vxbridge is down, loopback
// connections to published ports are refused and the ports are not reserved;
// DNAT'ed traffic, the common case, does not notice. A restart reserves and
// relays again (Sync).
//
// Each port relays at most 1024 TCP connections and 1024 UDP clients at
// once (every relayed connection costs the plugin two descriptors); further
// TCP clients are reset at once, further UDP clients' datagrams dropped, and
// the log says so at most every 10 s per port.
package portproxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrInUse classifies a Reserve that found the port taken by another socket.
var ErrInUse = errors.New("address already in use")

// Mapping is one published port: Host (all addresses of its family when
// unspecified) relayed to Target.
type Mapping struct {
	Proto  string // "tcp", "udp" or "sctp"
	Host   netip.AddrPort
	Target netip.AddrPort
}

func (m Mapping) String() string { return fmt.Sprintf("%s/%s->%s", m.Host, m.Proto, m.Target) }

type key struct {
	proto string
	host  netip.AddrPort
}

func (m Mapping) key() key { return key{m.Proto, m.Host} }

// holder is one reserved port: a relay, or a bare socket.
type holder interface {
	target() netip.AddrPort
	close()
}

// Manager holds the sockets of the published ports. It opens them in the
// network namespace of the thread that calls Reserve or Sync, and dials
// containers from whatever thread the relay runs on: use it from a process
// that lives in the host's namespace.
type Manager struct {
	log      *slog.Logger
	dialWait time.Duration
	udpIdle  time.Duration
	// maxTCP and maxUDP bound the connections and flows one port relays at
	// once: a flood of loopback clients cannot take every descriptor of
	// the plugin. What is refused is logged, at most once per logEvery.
	maxTCP, maxUDP int
	logEvery       time.Duration

	mu   sync.Mutex
	held map[key]holder

	v6once sync.Once
	v6     bool
}

// New returns a Manager holding nothing.
func New(log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{log: log, dialWait: 5 * time.Second, udpIdle: 90 * time.Second, maxTCP: 1024, maxUDP: 1024,
		logEvery: 10 * time.Second, held: map[key]holder{}}
}

// Reserve opens the socket of m and starts relaying to m.Target. A port
// already held for the same target is success; held for another target,
// the relay is replaced. A port some other socket holds fails with ErrInUse.
func (mgr *Manager) Reserve(m Mapping) error {
	mgr.mu.Lock()
	defer mgr.mu.Unlock()
	return mgr.reserve(m)
}

func (mgr *Manager) reserve(m Mapping) error {
	if h, ok := mgr.held[m.key()]; ok {
		if h.target() == m.Target {
			return nil
		}
		h.close()
		delete(mgr.held, m.key())
	}
	h, err := mgr.open(m)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%w: %s %s: %w", ErrInUse, m.Proto, m.Host, err)
		}
		return fmt.Errorf("reserve %s %s: %w", m.Proto, m.Host, err)
	}
	mgr.held[m.key()] = h
	return nil
}

func (mgr *Manager) open(m Mapping) (holder, error) {
	if !m.Host.IsValid() || m.Host.Port() == 0 || !m.Target.IsValid() {
		return nil, fmt.Errorf("invalid mapping %s", m)
	}
	switch m.Proto {
	case "tcp":
		return mgr.listenTCP(m)
	case "udp":
		return mgr.listenUDP(m)
	case "sctp":
		return mgr.holdSCTP(m)
	}
	return nil, fmt.Errorf("protocol %q is not tcp, udp or sctp", m.Proto)
}

// Release closes m's socket and the connections it relays; a port not held
// is success.
func (mgr *Manager) Release(m Mapping) {
	mgr.mu.Lock()
	defer mgr.mu.Unlock()
	if h, ok := mgr.held[m.key()]; ok {
		h.close()
		delete(mgr.held, m.key())
	}
}

// Sync makes the held ports exactly want: it releases the others and
// reserves what is missing, and reports the mappings it could not reserve.
func (mgr *Manager) Sync(want []Mapping) error {
	mgr.mu.Lock()
	defer mgr.mu.Unlock()
	wanted := map[key]bool{}
	for _, m := range want {
		wanted[m.key()] = true
	}
	for k, h := range mgr.held {
		if !wanted[k] {
			h.close()
			delete(mgr.held, k)
		}
	}
	var errs []error
	for _, m := range want {
		if err := mgr.reserve(m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Held lists the mappings whose ports are held, sorted.
func (mgr *Manager) Held() []Mapping {
	mgr.mu.Lock()
	defer mgr.mu.Unlock()
	out := make([]Mapping, 0, len(mgr.held))
	for k, h := range mgr.held {
		out = append(out, Mapping{Proto: k.proto, Host: k.host, Target: h.target()})
	}
	slices.SortFunc(out, func(a, b Mapping) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// Close releases every port.
func (mgr *Manager) Close() { _ = mgr.Sync(nil) }

// IPv6 says whether this host can listen on IPv6 at all (a kernel booted
// with ipv6.disable=1 cannot); asked once.
func (mgr *Manager) IPv6() bool {
	mgr.v6once.Do(func() {
		l, err := net.Listen("tcp6", "[::1]:0")
		if err == nil {
			l.Close()
			mgr.v6 = true
		}
	})
	return mgr.v6
}

// EphemeralRange is the kernel's ephemeral port range
// (net.ipv4.ip_local_port_range, which IPv6 shares), where ports published
// without a host port are taken from.
func EphemeralRange() (lo, hi uint16, err error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, err
	}
	return parseRange(string(b))
}

func parseRange(s string) (lo, hi uint16, err error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("ip_local_port_range %q: want two ports", s)
	}
	l, err1 := strconv.ParseUint(f[0], 10, 16)
	h, err2 := strconv.ParseUint(f[1], 10, 16)
	if err1 != nil || err2 != nil || l == 0 || l > h {
		return 0, 0, fmt.Errorf("ip_local_port_range %q: want two ports, low to high", s)
	}
	return uint16(l), uint16(h), nil
}

// network is "tcp4" or "tcp6" (with IPV6_V6ONLY: the IPv4 port is a
// mapping of its own).
func network(proto string, a netip.Addr) string {
	if a.Is4() {
		return proto + "4"
	}
	return proto + "6"
}

// EphemeralRange is the package's EphemeralRange, for callers that hold a
// Manager.
func (mgr *Manager) EphemeralRange() (lo, hi uint16, err error) { return EphemeralRange() }

// refusals counts what one relay turns away and says so in the log at most
// once per interval, with the count since its last line: a flood must not
// become a flood of log lines.
type refusals struct {
	mu   sync.Mutex
	last time.Time
	n    int
}

func (r *refusals) note(mgr *Manager, what string, m Mapping, max int) {
	r.mu.Lock()
	r.n++
	if time.Since(r.last) < mgr.logEvery {
		r.mu.Unlock()
		return
	}
	n := r.n
	r.n, r.last = 0, time.Now()
	r.mu.Unlock()
	mgr.log.Warn("relay: refusing "+what+": the port relays its maximum already", "port", m.String(), "max", max, "refused", n)
}
