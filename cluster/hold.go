package cluster

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Departures and this host's own standing with etcd.
//
// A peer whose member record vanishes has let its lease run out: it is gone,
// and its entries go at once. That reading is only sound while this host's
// own lease is being renewed: when etcd itself was away (hung, paused,
// overloaded) for longer than the TTL, it revokes every lease the moment it
// runs again, before any host could renew, and every host would see every
// other vanish for the second it takes them all to register again (seen with
// SIGSTOP/SIGCONT of etcd: FDB entries of live peers deleted and re-added).
// So a departure seen while this host's own lease is in doubt (no renewal
// for two thirds of the TTL, or back for less than a TTL) is held: the
// peer's records stay with the sink of FollowNetwork until this host has
// been renewing again for a TTL (netHold), and go then if the peer has not
// come back. A peer that really died is dropped one TTL late in that case only.

// noteRenewed records a grant or keep-alive answer of the current lease.
func (c *Client) noteRenewed(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.renewed.IsZero() || now.Sub(c.renewed) > c.renewGap() {
		c.healthySince = now
	}
	c.renewed = now
	c.answered = now
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

// netHold sits between a network's watch and its sink: while this host is
// not settled, member records of other hosts that vanish stay with the sink,
// with the endpoints of those hosts. An endpoint withdrawn by a host that is
// still a member passes at once: only a departure is held.
type netHold struct {
	mu    sync.Mutex
	self  string
	sink  NetworkSink
	known map[string]Change // every record the sink holds, by Change.Key
	held  map[string]Change // the deletions held back, by Change.Key
	log   func(msg string, args ...any)
}

func newNetHold(self string, sink NetworkSink, log func(string, ...any)) *netHold {
	return &netHold{self: self, sink: sink, known: map[string]Change{}, held: map[string]Change{}, log: log}
}

// reset gives the sink a listing; unless settled, the members the listing
// lacks (and their endpoints) are kept in it.
func (h *netHold) reset(st NetworkState, settled bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	listed := map[string]bool{}
	for _, m := range st.Members {
		listed[m.Host] = true
	}
	held := map[string]Change{}
	if !settled {
		for key, ch := range h.known {
			if ch.Host == h.self || listed[ch.Host] {
				continue
			}
			if ch.Kind == MemberSet {
				st.Members = append(st.Members, ch.Member)
			} else {
				st.Endpoints = append(st.Endpoints, ch.Endpoint)
			}
			held[key] = gone(ch)
		}
	}
	h.known = map[string]Change{}
	for _, m := range st.Members {
		h.known["m/"+m.Host] = Change{Kind: MemberSet, Host: m.Host, Member: m}
	}
	for _, ep := range st.Endpoints {
		ch := Change{Kind: EndpointSet, Host: ep.Host, ID: ep.ID, Endpoint: ep}
		h.known[ch.Key()] = ch
	}
	h.noteHeld(held)
	h.sink.Reset(st)
}

// apply passes changes on, holding back the departures of other hosts
// (their member record and the endpoints deleted with it) unless settled.
func (h *netHold) apply(changes []Change, settled bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	departed := map[string]bool{}
	if !settled {
		for _, ch := range changes {
			// Only a member the sink holds can depart: the deletion of a
			// record never believed (a forged one) passes at once.
			if _, known := h.known["m/"+ch.Host]; ch.Kind == MemberGone && ch.Host != h.self && known {
				departed[ch.Host] = true
			}
		}
		for _, ch := range h.held {
			departed[ch.Host] = true
		}
	}
	held := maps.Clone(h.held)
	out := changes[:0:0]
	for _, ch := range changes {
		key := ch.Key()
		switch {
		case (ch.Kind == MemberGone || ch.Kind == EndpointGone) && departed[ch.Host]:
			held[key] = ch
			continue
		case ch.Kind == MemberGone || ch.Kind == EndpointGone:
			delete(h.known, key)
		default:
			delete(held, key)
			h.known[key] = ch
		}
		out = append(out, ch)
	}
	h.noteHeld(held)
	if len(out) > 0 {
		h.sink.Apply(out)
	}
}

// release passes on the held departures of the hosts that did not come back.
func (h *netHold) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.held) == 0 {
		return
	}
	out := make([]Change, 0, len(h.held))
	var hosts []string
	for key, ch := range h.held {
		out = append(out, ch)
		delete(h.known, key)
		if ch.Kind == MemberGone {
			hosts = append(hosts, ch.Host)
		}
	}
	slices.SortFunc(out, func(a, b Change) int { return strings.Compare(a.Key(), b.Key()) })
	slices.Sort(hosts)
	h.log("etcd: this host's lease is settled again; dropping the held peer hosts that did not come back", "gone", strings.Join(hosts, ","))
	h.held = map[string]Change{}
	h.sink.Apply(out)
}

// noteHeld replaces the held set, logging hosts newly held.
func (h *netHold) noteHeld(held map[string]Change) {
	var newly []string
	for key, ch := range held {
		if _, was := h.held[key]; !was && ch.Kind == MemberGone {
			newly = append(newly, ch.Host)
		}
	}
	if len(newly) > 0 {
		slices.Sort(newly)
		h.log("etcd: peer hosts vanished while this host's own lease is in doubt (etcd was away?); keeping their entries until it is settled",
			"hosts", strings.Join(newly, ","))
	}
	h.held = held
}

// gone is the deletion of the record ch sets.
func gone(ch Change) Change {
	if ch.Kind == MemberSet {
		return Change{Kind: MemberGone, Host: ch.Host}
	}
	return Change{Kind: EndpointGone, Host: ch.Host, ID: ch.ID}
}
