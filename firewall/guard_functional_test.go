package firewall

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

// TestVXLANGuardDropsUnknownSources: with the VXLAN port rule, a datagram
// to the port arrives from a VTEP in the set and from nowhere else, in
// every backend (vxbridge's own nftables tables with a set of their own);
// the set follows SetVXLANGuard; Reconcile puts back a flushed chain and a
// flushed set (in nftables mode, the whole table deleted); removing the
// rule lets everything in and leaves no set.
func TestVXLANGuardDropsUnknownSources(t *testing.T) {
	for _, b := range []Backend{BackendLegacy, BackendNFT, BackendNFTables} {
		t.Run(string(b), func(t *testing.T) { testGuard(t, b) })
	}
}

func testGuard(t *testing.T, b Backend) {
	h := &testHost{t: t, ns: nstest.New(t)}
	h.bridge("ul0", "192.0.2.1/24")
	peer := h.container("vp", "ul0", "192.0.2.11/24", "")
	stranger := h.container("vs", "ul0", "192.0.2.66/24", "")
	var fw *Firewall
	do(t, h.ns, func() (err error) {
		if _, err := exec.LookPath(b.command(false, "")); err != nil && b != BackendNFTables {
			return fmt.Errorf("%s not installed: %w", b.command(false, ""), err)
		}
		fw, err = NewWithBackend(b)
		return err
	})
	l := listenUDP(t, h.ns, "192.0.2.1:4789")
	reaches := func(from *nstest.NS, want bool) {
		t.Helper()
		name := map[*nstest.NS]string{peer: "192.0.2.11", stranger: "192.0.2.66"}[from]
		if got := l.receives(t, from); got != want {
			t.Fatalf("a datagram from %s to the VXLAN port arrived: %t, want %t\n%s", name, got, want, saveOf(t, h.ns, b))
		}
	}
	// The path first: a new veth's bridge port forwards only once the
	// kernel's link watch has seen its carrier, which may be a second
	// later (a first datagram from the stranger was lost 1 in 40 runs).
	for _, from := range []*nstest.NS{peer, stranger} {
		l.waitPath(t, from)
	}
	reaches(stranger, true) // no rule yet

	set := func(g VXLANGuard) {
		t.Helper()
		do(t, h.ns, func() error { return fw.SetVXLANGuard(g) })
	}
	set(VXLANGuard{Port: 4789, VTEPs: []netip.Addr{netip.MustParseAddr("192.0.2.11")}})
	reaches(peer, true)
	reaches(stranger, false)
	set(VXLANGuard{Port: 4789, VTEPs: []netip.Addr{netip.MustParseAddr("192.0.2.66"), netip.MustParseAddr("fd00::1")}})
	reaches(peer, false)
	reaches(stranger, true)

	// Damage, then the reconciler's pass.
	damageGuard(t, h.ns, b)
	do(t, h.ns, func() error { return fw.Reconcile(nil, nil, ownsAll) })
	reaches(peer, false)
	reaches(stranger, true)
	if d := saveOf(t, h.ns, b); !strings.Contains(d, "-A INPUT -j "+ChainInput) || !strings.Contains(d, "--match-set "+VTEPSet6) {
		t.Fatalf("after Reconcile:\n%s", d)
	}

	set(VXLANGuard{}) // removed: rules, then sets
	reaches(peer, true)
	requireGuardGone(t, h.ns, b)
}

// requireGuardGone checks that no VXLAN port rule and no VTEP set is left;
// in nftables mode, with no network either, no table.
func requireGuardGone(t *testing.T, ns *nstest.NS, b Backend) {
	t.Helper()
	if d := saveOf(t, ns, b); strings.Contains(d, ChainInput) {
		t.Fatalf("rule left after removal:\n%s", d)
	}
	if b == BackendNFTables {
		if left := nftLines(t, ns); left != nil {
			t.Fatalf("table left after removal: %q", left)
		}
		return
	}
	do(t, ns, func() error {
		if _, err := netlink.IpsetList(VTEPSet4); err == nil {
			return errors.New("set left after removal")
		}
		return nil
	})
}

// damageGuard breaks the VXLAN port rule as an operator's tool might: the
// chain and the set flushed; in nftables mode, vxbridge's tables deleted.
func damageGuard(t *testing.T, ns *nstest.NS, b Backend) {
	t.Helper()
	if b == BackendNFTables {
		do(t, ns, func() error {
			c, err := nftables.New()
			if err != nil {
				return err
			}
			for _, ipv6 := range []bool{false, true} {
				c.DelTable((&nftTable{ipv6: ipv6}).table())
			}
			return c.Flush()
		})
		return
	}
	run(t, ns, b.command(false, ""), "-F", ChainInput)
	do(t, ns, func() error { return netlink.IpsetFlush(VTEPSet4) })
}

// saveOf is backend b's iptables-save and ip6tables-save output in ns; in
// nftables mode, vxbridge's tables' filter chains in that form.
func saveOf(t *testing.T, ns *nstest.NS, b Backend) string {
	t.Helper()
	if b != BackendNFTables {
		return run(t, ns, b.command(false, "-save")) + run(t, ns, b.command(true, "-save"))
	}
	var out string
	for _, ipv6 := range []bool{false, true} {
		tb := &nftTable{ipv6: ipv6, timeout: nftTimeout}
		do(t, ns, func() error {
			l, err := tb.list()
			if err == nil && l.exists {
				out += saveText(tableFilter, l.state()[tableFilter])
			}
			return err
		})
	}
	return out
}

// udpListener counts datagrams on a socket in the host's namespace.
type udpListener struct {
	conn net.PacketConn
	addr string
}

func listenUDP(t *testing.T, ns *nstest.NS, addr string) *udpListener {
	t.Helper()
	l := &udpListener{addr: addr}
	do(t, ns, func() (err error) {
		l.conn, err = net.ListenPacket("udp4", addr)
		return err
	})
	t.Cleanup(func() { l.conn.Close() })
	return l
}

// waitPath waits until a datagram from ns arrives, up to 5 s.
func (l *udpListener) waitPath(t *testing.T, from *nstest.NS) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !l.receives(t, from); {
		if time.Now().After(deadline) {
			t.Fatalf("no datagram to %s arrived in 5 s with no rule", l.addr)
		}
	}
}

// receives sends one datagram from ns and says whether it arrived.
func (l *udpListener) receives(t *testing.T, from *nstest.NS) bool {
	t.Helper()
	want := fmt.Sprintf("probe %d", time.Now().UnixNano())
	do(t, from, func() error {
		c, err := net.Dial("udp4", l.addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(want))
		return err
	})
	buf := make([]byte, 64)
	for {
		_ = l.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _, err := l.conn.ReadFrom(buf)
		if err != nil {
			return false
		}
		if string(buf[:n]) == want {
			return true
		}
	}
}
