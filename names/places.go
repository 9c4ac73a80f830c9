package names

import (
	"net/netip"
	"sync"
)

// places bounds the queries (or TCP clients) under way: in all, and per
// sender, so that one container flooding queries whose upstream is slow
// takes a share of the places, not all of them, and the other containers'
// queries are still answered.
type places struct {
	mu        sync.Mutex
	total     int
	perSource int
	used      int
	by        map[netip.Addr]int
}

func newPlaces(total, perSource int) *places {
	return &places{total: total, perSource: perSource, by: map[netip.Addr]int{}}
}

// take reserves a place for src, or says there is none.
func (p *places) take(src netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used >= p.total || p.by[src] >= p.perSource {
		return false
	}
	p.used++
	p.by[src]++
	return true
}

// give returns a place src took.
func (p *places) give(src netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.used--
	if p.by[src]--; p.by[src] <= 0 {
		delete(p.by, src)
	}
}
