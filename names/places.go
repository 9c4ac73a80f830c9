package names

import (
	"net/netip"
	"sync"
	"time"
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

// rates holds each sender to a query rate (a token bucket per address),
// checked before any work is done for a query: a container flooding
// queries costs the server a read and a map look-up per query beyond its
// rate, not a conntrack look-up, a goroutine and a forward, so the process
// keeps its time for docker's calls.
type rates struct {
	mu      sync.Mutex
	perSec  float64
	burst   float64
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// maxBuckets bounds the map: beyond it (senders forging addresses), every
// sender starts again from a full bucket.
const maxBuckets = 4096

func newRates(perSec, burst int) *rates {
	return &rates{perSec: float64(perSec), burst: float64(burst), buckets: map[netip.Addr]*bucket{}}
}

// allow takes a token of src's bucket at now, or says it has none.
func (r *rates) allow(src netip.Addr, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buckets[src]
	if b == nil {
		if len(r.buckets) >= maxBuckets {
			clear(r.buckets)
		}
		b = &bucket{tokens: r.burst, last: now}
		r.buckets[src] = b
	}
	b.tokens = min(r.burst, b.tokens+now.Sub(b.last).Seconds()*r.perSec)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
