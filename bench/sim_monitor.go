package bench

import (
	"net"
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
	mu     sync.Mutex
	seen   map[string]*macTimes
	lost   atomic.Bool // the socket overflowed: some events are missing
	done   chan struct{}
	closed sync.Once
}

// macTimes is when a MAC's entries were first seen added and deleted.
type macTimes struct {
	fdbAdd, neighAdd, fdbDel, neighDel time.Time
}

func newNeighMonitor(t testing.TB) *neighMonitor {
	m := &neighMonitor{seen: map[string]*macTimes{}, done: make(chan struct{})}
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
	if len(u.HardwareAddr) != 6 {
		return
	}
	mac := net.HardwareAddr(u.HardwareAddr).String()
	m.mu.Lock()
	defer m.mu.Unlock()
	mt := m.seen[mac]
	if mt == nil {
		mt = &macTimes{}
		m.seen[mac] = mt
	}
	add := u.Type == unix.RTM_NEWNEIGH
	var slot *time.Time
	switch {
	case u.Family == unix.AF_BRIDGE && add:
		slot = &mt.fdbAdd
	case u.Family == unix.AF_BRIDGE:
		slot = &mt.fdbDel
	case add:
		slot = &mt.neighAdd
	default:
		slot = &mt.neighDel
	}
	if slot.IsZero() {
		*slot = at
	}
}

// added is when both entries of mac were in the kernel (the later of its
// FDB and neighbour additions).
func (m *neighMonitor) added(mac string) (time.Time, bool) {
	return m.both(mac, func(mt *macTimes) (time.Time, time.Time) { return mt.fdbAdd, mt.neighAdd })
}

// deleted is when both entries of mac were gone.
func (m *neighMonitor) deleted(mac string) (time.Time, bool) {
	return m.both(mac, func(mt *macTimes) (time.Time, time.Time) { return mt.fdbDel, mt.neighDel })
}

// both is the later of the two times pick takes from mac's, if both were seen.
func (m *neighMonitor) both(mac string, pick func(*macTimes) (time.Time, time.Time)) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mt := m.seen[mac]
	if mt == nil {
		return time.Time{}, false
	}
	a, b := pick(mt)
	if a.IsZero() || b.IsZero() {
		return time.Time{}, false
	}
	return later(a, b), true
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
