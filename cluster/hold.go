package cluster

import (
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Departures and this host's own standing with etcd.
//
// A peer whose host record vanishes has let its lease run out: it is gone,
// and its entries go at once. That reading is only sound while this host's
// own lease is being renewed: when etcd itself was away (hung, paused,
// overloaded) for longer than the TTL, it revokes every lease the moment it
// runs again, before any host could renew, and every host would see every
// other vanish for the second it takes them all to register again (seen with
// SIGSTOP/SIGCONT of etcd: FDB entries of live peers deleted and re-added).
// So a departure seen while this host's own lease is in doubt (no renewal
// for two thirds of the TTL, or back for less than a TTL) is held: the
// peer's records stay in the view given to Watch's fn until this host has
// been renewing again for a TTL, and go then if the peer has not come back.
// A peer that really died is dropped one TTL late in that case only.

// noteRenewed records a grant or keep-alive answer of the current lease.
func (c *Client) noteRenewed(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.renewed.IsZero() || now.Sub(c.renewed) > c.renewGap() {
		c.healthySince = now
	}
	c.renewed = now
}

// renewGap is the longest silence after which this host still trusts its
// own lease: clientv3 renews every third of the TTL.
func (c *Client) renewGap() time.Duration { return 2 * c.ttl / 3 }

// settled says whether this host's lease has been renewed in time,
// continuously, for at least a TTL: only then is a departure a peer's own.
func (c *Client) settled(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lease != 0 && !c.renewed.IsZero() && now.Sub(c.renewed) <= c.renewGap() &&
		now.Sub(c.healthySince) >= c.ttl
}

// departureHold sits between the watch and fn: while this host is not
// settled, hosts that vanish from the view stay in what fn gets, with the
// endpoints they had.
type departureHold struct {
	mu   sync.Mutex
	self string // this host's id: its own records are never held
	fn   func(View)
	raw  View     // the latest view from etcd
	last View     // the latest view given to fn
	held []string // ids of departed hosts kept in last
	log  func(msg string, args ...any)
}

func newDepartureHold(self string, fn func(View), log func(string, ...any)) *departureHold {
	return &departureHold{self: self, fn: fn, log: log}
}

// update gives fn the new view v (owned by the hold), keeping departed
// hosts unless settled.
func (d *departureHold) update(v View, settled bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.raw = v
	out := v
	var held []string
	if !settled && d.last.Hosts != nil {
		out, held = keepDeparted(v, d.last, d.self)
	}
	d.deliver(out, held, false)
}

// release gives fn the latest view from etcd if departures are held.
func (d *departureHold) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.held) > 0 {
		d.deliver(d.raw, nil, true)
	}
}

// deliver gives v to fn; settled says the hold ends because this host is.
func (d *departureHold) deliver(v View, held []string, settled bool) {
	var newly []string
	for _, id := range held {
		if !slices.Contains(d.held, id) {
			newly = append(newly, id)
		}
	}
	switch {
	case len(newly) > 0:
		d.log("etcd: peer hosts vanished while this host's own lease is in doubt (etcd was away?); keeping their entries until it is settled",
			"hosts", strings.Join(newly, ","))
	case len(held) == 0 && len(d.held) > 0 && settled:
		var gone []string
		for _, id := range d.held {
			if _, ok := v.Hosts[id]; !ok {
				gone = append(gone, id)
			}
		}
		d.log("etcd: this host's lease is settled again; dropping the held peer hosts that did not come back", "gone", strings.Join(gone, ","))
	case len(held) == 0 && len(d.held) > 0:
		d.log("etcd: every held peer host is back", "hosts", strings.Join(d.held, ","))
	}
	d.held, d.last = held, v
	d.fn(v.clone())
}

// keepDeparted returns v plus every host of last but self that v lacks,
// with its endpoints from last, and the ids of those hosts (sorted).
func keepDeparted(v, last View, self string) (View, []string) {
	out := v.clone()
	var held []string
	for id, h := range last.Hosts {
		if _, ok := v.Hosts[id]; ok || id == self {
			continue
		}
		out.Hosts[id] = h
		held = append(held, id)
		for key, ep := range last.Endpoints {
			if _, ok := out.Endpoints[key]; !ok && ep.Host == id {
				out.Endpoints[key] = ep
			}
		}
	}
	sort.Strings(held)
	return out, held
}
