package bench

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// neighMonitor timestamps the FDB and neighbour entries a plugin adds and
// deletes, by MAC, from the kernel's netlink notifications (RTNLGRP_NEIGH)
// in the namespaces of its VXLAN devices. The time is when the
// notification reached the harness: the kernel change happened before.
type neighMonitor struct {
	mu   sync.Mutex
	seen map[string]*macTimes
	// gone is when neighbour entries were deleted, by IP: the kernel's
	// deletion notice of a neighbour entry carries no MAC (the entry is
	// no longer valid when it is sent). An address comes back with
	// another endpoint, so every deletion is kept.
	gone   map[netip.Addr][]time.Time
	lost   atomic.Bool // the socket overflowed: some events are missing
	done   chan struct{}
	closed sync.Once
}

// macTimes is when a MAC's entries were first seen added, and its FDB
// entry deleted.
type macTimes struct {
	fdbAdd, neighAdd, fdbDel time.Time
}

func newNeighMonitor(t testing.TB) *neighMonitor {
	m := &neighMonitor{seen: map[string]*macTimes{}, gone: map[netip.Addr][]time.Time{}, done: make(chan struct{})}
	t.Cleanup(m.stop)
	return m
}

func (m *neighMonitor) stop() { m.closed.Do(func() { close(m.done) }) }

// watch follows the namespace at nsPath until stop; an overflowed socket is
// noted and subscribed again.
func (m *neighMonitor) watch(t testing.TB, nsPath string) {
	t.Helper()
	h, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	subscribe := func() (chan netlink.NeighUpdate, error) {
		ch := make(chan netlink.NeighUpdate, 4096)
		err := netlink.NeighSubscribeWithOptions(ch, m.done, netlink.NeighSubscribeOptions{Namespace: &h,
			ErrorCallback: func(error) { m.lost.Store(true) }, ReceiveBufferSize: 16 << 20, ReceiveBufferForceSize: true})
		return ch, err
	}
	ch, err := subscribe()
	if err != nil {
		h.Close()
		t.Fatalf("monitor neighbours in %s: %v", nsPath, err)
	}
	go func() {
		defer h.Close()
		for {
			for u := range ch {
				m.note(u, time.Now())
			}
			select {
			case <-m.done:
				return
			default:
			}
			if ch, err = subscribe(); err != nil {
				m.lost.Store(true)
				return
			}
		}
	}()
}

func (m *neighMonitor) note(u netlink.NeighUpdate, at time.Time) {
	add := u.Type == unix.RTM_NEWNEIGH
	m.mu.Lock()
	defer m.mu.Unlock()
	if !add && u.Family != unix.AF_BRIDGE {
		if ip, ok := netip.AddrFromSlice(u.IP); ok {
			m.gone[ip.Unmap()] = append(m.gone[ip.Unmap()], at)
		}
		return
	}
	if len(u.HardwareAddr) != 6 || (add && u.Family != unix.AF_BRIDGE && u.State&netlink.NUD_PERMANENT == 0) {
		return
	}
	mac := net.HardwareAddr(u.HardwareAddr).String()
	mt := m.seen[mac]
	if mt == nil {
		mt = &macTimes{}
		m.seen[mac] = mt
	}
	slot := &mt.neighAdd
	switch {
	case u.Family == unix.AF_BRIDGE && add:
		slot = &mt.fdbAdd
	case u.Family == unix.AF_BRIDGE:
		slot = &mt.fdbDel
	}
	if slot.IsZero() {
		*slot = at
	}
}

// added is when both entries of mac were in the kernel (the later of its
// FDB and neighbour additions).
func (m *neighMonitor) added(mac string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mt := m.seen[mac]
	if mt == nil || mt.fdbAdd.IsZero() || mt.neighAdd.IsZero() {
		return time.Time{}, false
	}
	return later(mt.fdbAdd, mt.neighAdd), true
}

// deleted is when both entries of the endpoint with mac and ip were gone,
// its neighbour entry's deletion being the first of ip's after since.
func (m *neighMonitor) deleted(mac string, ip netip.Addr, since time.Time) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mt := m.seen[mac]
	if mt == nil || mt.fdbDel.IsZero() {
		return time.Time{}, false
	}
	for _, at := range m.gone[ip] {
		if !at.Before(since) {
			return later(mt.fdbDel, at), true
		}
	}
	return time.Time{}, false
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// seenAdds says whether mac's FDB and neighbour additions were seen.
func (m *neighMonitor) seenAdds(mac string) (fdb, neigh bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mt := m.seen[mac]
	return mt != nil && !mt.fdbAdd.IsZero(), mt != nil && !mt.neighAdd.IsZero()
}
