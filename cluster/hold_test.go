package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/vxbridge/vxbridge/internal/testutil/etcdtest"
)

func holdState(hosts ...string) NetworkState {
	st := NetworkState{VNI: 7}
	for i, h := range hosts {
		st.Members = append(st.Members, Member{Host: h, VTEP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})})
		st.Endpoints = append(st.Endpoints, Endpoint{ID: "e", Host: h, VNI: 7, MAC: "02:00:00:00:00:01"})
	}
	return st
}

func gones(hosts ...string) []Change {
	var out []Change
	for _, h := range hosts {
		out = append(out, Change{Kind: EndpointGone, Host: h, ID: "e"}, Change{Kind: MemberGone, Host: h})
	}
	return out
}

func sets(st NetworkState) []Change {
	var out []Change
	for _, m := range st.Members {
		out = append(out, Change{Kind: MemberSet, Host: m.Host, Member: m})
	}
	for _, ep := range st.Endpoints {
		out = append(out, Change{Kind: EndpointSet, Host: ep.Host, ID: ep.ID, Endpoint: ep})
	}
	return out
}

func TestNetHold(t *testing.T) {
	s := newSink()
	var logs []string
	h := newNetHold("self", s, func(msg string, args ...any) { logs = append(logs, fmt.Sprint(msg, args)) })
	step := func(what, want string) {
		t.Helper()
		s.mu.Lock()
		got := s.stringLocked()
		s.mu.Unlock()
		if got != want {
			t.Fatalf("%s: sink holds %q, want %q", what, got, want)
		}
	}
	h.reset(holdState("a", "b", "self"), false) // the first listing: nothing to hold yet
	step("first listing", "e/a/e@invalid IP e/b/e@invalid IP e/self/e@invalid IP m/a@192.0.2.1 m/b@192.0.2.2 m/self@192.0.2.3")

	h.apply(gones("b"), true) // settled: a departure is the peer's own
	step("departure while settled", "e/a/e@invalid IP e/self/e@invalid IP m/a@192.0.2.1 m/self@192.0.2.3")

	h.apply(sets(holdState("a", "b", "self")), true)
	h.apply(gones("a", "b", "self"), false) // etcd revoked everything: a and b held, not this host's own
	step("departure in doubt", "e/a/e@invalid IP e/b/e@invalid IP m/a@192.0.2.1 m/b@192.0.2.2")
	h.apply(sets(holdState("self")), false) // this host registered again
	a := holdState("a")
	a.Endpoints = nil
	h.apply(sets(a), false) // a came back without its endpoint
	h.apply([]Change{{Kind: EndpointGone, Host: "a", ID: "x"}}, false)
	step("a back", "e/a/e@invalid IP e/b/e@invalid IP e/self/e@invalid IP m/a@192.0.2.1 m/b@192.0.2.2 m/self@192.0.2.1")
	h.release() // settled: b has not come back; a's old endpoint, not published again, goes
	step("released", "e/self/e@invalid IP m/a@192.0.2.1 m/self@192.0.2.1")
	calls := len(s.states)
	h.release()
	if len(s.states) != calls {
		t.Errorf("release with nothing held called the sink again")
	}
	// A listing that lacks a member while in doubt keeps it, with its endpoints.
	h.apply(sets(holdState("a", "self")), true)
	h.reset(holdState("self"), false)
	step("relisted in doubt", "e/a/e@invalid IP e/self/e@invalid IP m/a@192.0.2.1 m/self@192.0.2.1")
	h.reset(holdState("self"), true)
	step("relisted settled", "e/self/e@invalid IP m/self@192.0.2.1")
	if len(logs) != 3 || !strings.Contains(logs[0], "[hosts a,b]") || !strings.Contains(logs[1], "[gone b]") ||
		!strings.Contains(logs[2], "[hosts a]") {
		t.Errorf("logs: %q", logs)
	}
}

func TestSettled(t *testing.T) {
	c := &Client{ttl: 3 * time.Second, lease: 1}
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	if c.settled(t0) {
		t.Fatal("settled before any renewal")
	}
	for s := 0; s <= 3; s++ {
		c.noteRenewed(at(time.Duration(s) * time.Second))
	}
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{
		{2900 * time.Millisecond, false}, // renewing, but for less than a TTL
		{3 * time.Second, true},
		{5 * time.Second, true},          // last renewal 2 s ago: two thirds of the TTL
		{5100 * time.Millisecond, false}, // silent for longer
	} {
		if got := c.settled(at(tc.at)); got != tc.want {
			t.Errorf("settled at t0+%v = %v, want %v", tc.at, got, tc.want)
		}
	}
	c.noteRenewed(at(6 * time.Second)) // after a gap: a new run of renewals
	if c.settled(at(6 * time.Second)) {
		t.Error("settled right after a gap in renewals")
	}
	for s := 7; s <= 9; s++ {
		c.noteRenewed(at(time.Duration(s) * time.Second))
	}
	if !c.settled(at(9 * time.Second)) {
		t.Error("not settled after a TTL of renewals")
	}
	c.lease = 0
	if c.settled(at(9 * time.Second)) {
		t.Error("settled without a lease")
	}
}

// TestDepartureHeldWhileLeaseInDoubt: a peer whose records vanish while
// this host's own renewals are overdue (as when etcd was hung longer than
// the TTL and revokes every lease on waking) stays with the sink until
// this host has renewed for a TTL again, then goes.
func TestDepartureHeldWhileLeaseInDoubt(t *testing.T) {
	srv := etcdtest.Start(t)
	a, b, s := peerSeen(t, srv)
	waitSynced(t, a.c, 5*time.Second)

	b.c.mu.Lock()
	b.c.renewed = time.Now().Add(-testTTL) // hb has not heard from etcd for a TTL
	b.c.mu.Unlock()
	a.stop()
	revoked := time.Now()
	if _, err := b.c.etcd().Revoke(context.Background(), a.c.currentLease()); err != nil {
		t.Fatal(err)
	}
	s.until(t, 3*testTTL, "m/hb@192.0.2.2")
	t.Logf("departure applied %v after the revoke (TTL %v)", time.Since(revoked).Round(time.Millisecond), testTTL)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, st := range s.states {
		if !strings.Contains(st, "m/ha@") && s.at[i].After(revoked) {
			if d := s.at[i].Sub(revoked); d < testTTL/2 {
				t.Errorf("a state without ha came %v after the revoke: the departure was not held", d)
			}
			break
		}
	}
}

// TestLeaseEpochAndContact: the epoch moves when the lease is found gone
// (before a new one is granted, so no block check is skipped in between)
// and again at the grant; "lease not found" counts as an answer from etcd.
func TestLeaseEpochAndContact(t *testing.T) {
	c := &Client{ttl: 3 * time.Second}
	if c.InContact() {
		t.Fatal("in contact without any answer")
	}
	c.setLease(7)
	c.noteRenewed(time.Now())
	e := c.LeaseEpoch()
	if !c.InContact() {
		t.Fatal("not in contact right after a renewal")
	}
	c.leaseGone()
	if c.LeaseEpoch() == e {
		t.Fatal("the lease is gone and the epoch did not move")
	}
	if !c.InContact() {
		t.Fatal(`"lease not found" did not count as an answer`)
	}
	e = c.LeaseEpoch()
	c.setLease(8)
	if c.LeaseEpoch() == e {
		t.Fatal("a new lease and the epoch did not move")
	}
	c.answered = time.Now().Add(-2100 * time.Millisecond) // silent for more than two thirds of the TTL
	if c.InContact() {
		t.Fatal("in contact after a silence of 2.1 s with a TTL of 3 s")
	}
	if !c.Unreachable(fmt.Errorf("%w: list: %w", ErrUnavailable, context.DeadlineExceeded)) ||
		c.Unreachable(&HostIDInUseError{HostID: "h"}) ||
		c.Unreachable(fmt.Errorf("%w: list: %w", ErrUnavailable, rpctypes.ErrPermissionDenied)) {
		t.Fatal("Unreachable: a timeout is no answer; a host id live elsewhere or a denied permission is one")
	}
}
