package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/etcdtest"
)

// sink collects what FollowNetwork gives it, as the set of records it
// holds after each call.
type sink struct {
	mu   sync.Mutex
	recs map[string]Change
	// forgedKeys: the records last said to be forged (Change.Forged), by
	// key; seenForged: every "<key>: <why>" it was ever told
	forgedKeys map[string]string
	seenForged map[string]bool
	resets     int
	changes    []Change
	states     []string    // records held after each call
	at         []time.Time // when each call came
	ch         chan struct{}
}

func newSink() *sink {
	return &sink{recs: map[string]Change{}, forgedKeys: map[string]string{}, seenForged: map[string]bool{}, ch: make(chan struct{}, 1)}
}

func (s *sink) Reset(st NetworkState) {
	s.mu.Lock()
	s.recs = map[string]Change{}
	for _, m := range st.Members {
		s.recs["m/"+m.Host] = Change{Kind: MemberSet, Host: m.Host, Member: m}
	}
	for _, ep := range st.Endpoints {
		s.recs["e/"+ep.Host+"/"+ep.ID] = Change{Kind: EndpointSet, Host: ep.Host, ID: ep.ID, Endpoint: ep}
	}
	s.forgedKeys = maps.Clone(st.Forged)
	if s.forgedKeys == nil {
		s.forgedKeys = map[string]string{}
	}
	for key, why := range st.Forged {
		s.seenForged[key+": "+why] = true
	}
	s.resets++
	s.noted()
}

func (s *sink) Apply(cs []Change) {
	s.mu.Lock()
	for _, c := range cs {
		if c.Forged != "" {
			s.forgedKeys[c.Key()] = c.Forged
			s.seenForged[c.Key()+": "+c.Forged] = true
		} else {
			delete(s.forgedKeys, c.Key())
		}
		if c.Kind == MemberGone || c.Kind == EndpointGone {
			delete(s.recs, c.Key())
		} else {
			s.recs[c.Key()] = c
		}
	}
	s.changes = append(s.changes, cs...)
	s.noted()
}

// noted records the state and wakes until; s.mu held, released.
func (s *sink) noted() {
	s.states = append(s.states, s.stringLocked())
	s.at = append(s.at, time.Now())
	s.mu.Unlock()
	select {
	case s.ch <- struct{}{}:
	default:
	}
}

// stringLocked lists the held records: "m/<host>@<vtep>" and "e/<host>/<id>@<ipv4>".
func (s *sink) stringLocked() string {
	var out []string
	for key, c := range s.recs {
		switch c.Kind {
		case MemberSet:
			out = append(out, key+"@"+c.Member.VTEP.String())
		case EndpointSet:
			out = append(out, key+"@"+c.Endpoint.IPv4.String())
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// until waits for the held records to be want and returns how long it took.
func (s *sink) until(t *testing.T, within time.Duration, want string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(within)
	for {
		s.mu.Lock()
		got := s.stringLocked()
		s.mu.Unlock()
		if got == want {
			return time.Since(start)
		}
		select {
		case <-s.ch:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("records %q within %s; have %q", want, within, got)
		}
	}
}

// follow runs c.FollowNetwork(vni) into a new sink until the test ends.
func follow(t *testing.T, c *Client, vni uint32) *sink {
	s := newSink()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.FollowNetwork(ctx, vni, s) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func ep(id string, vni uint32, ip string) Endpoint {
	return Endpoint{ID: id, VNI: vni, MAC: "02:00:00:00:00:01", IPv4: netip.MustParseAddr(ip)}
}

func TestFollowNetwork(t *testing.T) {
	srv := etcdtest.Start(t)
	a := startHost(t, srv, "ha", "192.0.2.1")
	b := startHost(t, srv, "hb", "192.0.2.2")
	a.c.Rejoin(42)
	b.c.Rejoin(42)
	s := follow(t, b.c, 42)

	start := time.Now()
	a.c.Publish(ep("e1", 42, "10.1.0.2")) // returns at once
	if d := time.Since(start); d > 10*time.Millisecond {
		t.Fatalf("Publish took %s: it must not wait for etcd", d)
	}
	took := s.until(t, 5*time.Second, "e/ha/e1@10.1.0.2 m/ha@192.0.2.1 m/hb@192.0.2.2")
	t.Logf("endpoint visible on the other host %s after Publish", took)
	// An endpoint of a network the host is not a member of is not published;
	// another network's records are another network's.
	a.c.Publish(ep("e3", 7, "10.7.0.2"))
	a.c.Rejoin(7)
	s7 := follow(t, b.c, 7)
	s7.until(t, 5*time.Second, "e/ha/e3@10.7.0.2 m/ha@192.0.2.1")
	s.until(t, time.Second, "e/ha/e1@10.1.0.2 m/ha@192.0.2.1 m/hb@192.0.2.2")

	a.c.Withdraw("e1")
	s.until(t, 5*time.Second, "m/ha@192.0.2.1 m/hb@192.0.2.2")
	a.c.LeaveNetwork(7)
	s7.until(t, 5*time.Second, "")
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.changes {
		if c.Endpoint.VNI != 0 && c.Endpoint.VNI != 42 {
			t.Errorf("network 42's sink got %+v", c)
		}
	}
}

// TestFollowOnlyOwnNetworks: a host hears nothing of a network it does
// not follow, however busy that network is: not one watch event.
func TestFollowOnlyOwnNetworks(t *testing.T) {
	srv := etcdtest.Start(t)
	a := startHost(t, srv, "ha", "192.0.2.1")
	b := startHost(t, srv, "hb", "192.0.2.2")
	c := startHost(t, srv, "hc", "192.0.2.3")
	a.c.Rejoin(1)
	b.c.Rejoin(1)
	b.c.Rejoin(2)
	c.c.Rejoin(2)
	s1 := follow(t, a.c, 1)
	s2 := follow(t, b.c, 2)
	s1.until(t, 5*time.Second, "m/ha@192.0.2.1 m/hb@192.0.2.2")
	s2.until(t, 5*time.Second, "m/hb@192.0.2.2 m/hc@192.0.2.3")
	_, before := a.c.WatchStats()
	for i := range 50 { // network 2 churns
		c.c.Publish(ep(fmt.Sprint("e", i), 2, fmt.Sprintf("10.2.0.%d", i+2)))
		if i >= 10 {
			c.c.Withdraw(fmt.Sprint("e", i-10))
		}
	}
	waitSynced(t, c.c, 5*time.Second)
	var want []string
	for i := 40; i < 50; i++ {
		want = append(want, fmt.Sprintf("e/hc/e%d@10.2.0.%d", i, i+2))
	}
	slices.Sort(want)
	s2.until(t, 5*time.Second, strings.Join(want, " ")+" m/hb@192.0.2.2 m/hc@192.0.2.3")
	b.c.Publish(ep("x", 1, "10.1.0.9")) // one change in network 1, to know a's watch is live
	s1.until(t, 5*time.Second, "e/hb/x@10.1.0.9 m/ha@192.0.2.1 m/hb@192.0.2.2")
	if _, after := a.c.WatchStats(); after-before != 1 {
		t.Fatalf("host ha (network 1 only) received %d watch events while network 2 churned, want 1 (its own network's)", after-before)
	}
}

// TestHostExpiry: a host that dies (no revoke) is dropped with its
// endpoints once its lease runs out.
func TestHostExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out TTLs or an outage; skipped with -short")
	}
	srv := etcdtest.Start(t)
	a, _, s := peerSeen(t, srv)
	a.stop()
	took := s.until(t, testTTL+3*time.Second, "m/hb@192.0.2.2")
	t.Logf("dead host dropped %s after it stopped (TTL %s)", took, testTTL)
}

// peerSeen starts hosts ha and hb on srv, both in network 42, publishes
// ha's endpoint e1 and waits until hb's follower has it.
func peerSeen(t *testing.T, srv *etcdtest.Server) (a, b *testHost, s *sink) {
	t.Helper()
	a = startHost(t, srv, "ha", "192.0.2.1")
	b = startHost(t, srv, "hb", "192.0.2.2")
	a.c.Rejoin(42)
	b.c.Rejoin(42)
	s = follow(t, b.c, 42)
	a.c.Publish(ep("e1", 42, "10.1.0.2"))
	s.until(t, 5*time.Second, "e/ha/e1@10.1.0.2 m/ha@192.0.2.1 m/hb@192.0.2.2")
	return a, b, s
}

// TestFollowRelistsAfterCompaction: a watch resuming from a compacted
// revision reports it, and FollowNetwork lists again and sees everything.
func TestFollowRelistsAfterCompaction(t *testing.T) {
	srv := etcdtest.Start(t)
	a := startHost(t, srv, "ha", "192.0.2.1")
	a.c.Rejoin(42)
	a.c.Publish(ep("e1", 42, "10.1.0.2"))
	waitSynced(t, a.c, 5*time.Second)
	st, err := a.c.listNetwork(context.Background(), newVerifier(a.c, 42))
	if err != nil {
		t.Fatal(err)
	}
	a.c.Publish(ep("e2", 42, "10.1.0.3"))
	waitSynced(t, a.c, 5*time.Second)
	a.c.Publish(ep("e3", 42, "10.1.0.4")) // two revisions on: the first after the listing is compacted
	waitSynced(t, a.c, 5*time.Second)
	resp, err := a.c.etcd().Get(context.Background(), "/test/hosts/ha")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.etcd().Compact(context.Background(), resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// From the old listing's revision, the watch finds it compacted away.
	hold := newNetHold("ha", newSink(), t.Logf)
	_, err = a.c.followFromRev(ctx, newVerifier(a.c, 42), hold, st.Rev)
	var comp errCompacted
	if !errors.As(err, &comp) {
		t.Fatalf("watch from a compacted revision: %v, want errCompacted", err)
	}
	s := follow(t, a.c, 42)
	s.until(t, 5*time.Second, "e/ha/e1@10.1.0.2 e/ha/e2@10.1.0.3 e/ha/e3@10.1.0.4 m/ha@192.0.2.1")
}

// TestEtcdOutage: publishing never blocks while etcd is down, and after it
// returns (later than the TTL) everything converges without a restart.
func TestEtcdOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out TTLs or an outage; skipped with -short")
	}
	srv := etcdtest.Start(t)
	a, _, s := peerSeen(t, srv)

	waitSynced(t, a.c, 5*time.Second)
	if ok, why := a.c.Connected(); !ok {
		t.Fatalf("Connected before the outage: %s", why)
	}
	lease := a.c.currentLease()
	srv.Stop()
	start := time.Now()
	a.c.Publish(ep("e2", 42, "10.1.0.3"))
	a.c.Withdraw("e1")
	if d := time.Since(start); d > 10*time.Millisecond {
		t.Fatalf("Publish/Withdraw with etcd down took %s", d)
	}
	// Longer than the TTL (the lease is lost and taken again) and long
	// enough for gRPC's default reconnect backoff to grow past 5 s.
	time.Sleep(10 * time.Second)
	if ok, why := a.c.Connected(); ok || why == "" {
		t.Fatalf("Connected during the outage: %t %q", ok, why)
	}
	s.mu.Lock()
	before := len(s.states)
	s.mu.Unlock()
	srv.Restart()
	took := s.until(t, 15*time.Second, "e/ha/e2@10.1.0.3 m/ha@192.0.2.1 m/hb@192.0.2.2")
	t.Logf("converged %s after etcd came back", took)
	if took > 5*time.Second {
		t.Errorf("converged %s after etcd came back, want within a few seconds", took)
	}
	// etcd gives leases a fresh TTL when it starts: the hosts take theirs up
	// again in time (the same lease), so no peer ever sees a host vanish and
	// come back.
	time.Sleep(4 * testTTL) // past the old lease's fresh TTL: a lease not taken up has run out
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, st := range s.states[before:] {
		if !strings.Contains(st, "m/ha@") {
			t.Fatalf("state %d after etcd returned lacks host ha: %q", i, st)
		}
	}
	waitSynced(t, a.c, 10*time.Second)
	if now := a.c.currentLease(); now != lease {
		t.Errorf("host ha's lease %x after the outage, want %x taken up again", now, lease)
	}
}

// TestEndpointRecordsOnlyInOwnRange: a host's publishing reads and writes
// only its own keys: another host's records in the same network are never
// touched, even when they look like its own.
func TestEndpointRecordsOnlyInOwnRange(t *testing.T) {
	srv := etcdtest.Start(t)
	a, b, s := peerSeen(t, srv)
	b.c.Publish(ep("e1", 42, "10.1.0.3")) // the same endpoint id on another host
	s.until(t, 5*time.Second, "e/ha/e1@10.1.0.2 e/hb/e1@10.1.0.3 m/ha@192.0.2.1 m/hb@192.0.2.2")
	a.c.Withdraw("e1")
	s.until(t, 5*time.Second, "e/hb/e1@10.1.0.3 m/ha@192.0.2.1 m/hb@192.0.2.2")
}

// TestOldHostsListed: a host of the version before (a host record without
// the layout mark) is listed until it goes or is upgraded.
func TestOldHostsListed(t *testing.T) {
	srv := etcdtest.Start(t)
	a := startHost(t, srv, "ha", "192.0.2.1")
	waitSynced(t, a.c, 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.c.FollowHosts(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wait := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for strings.Join(a.c.OldHosts(), ",") != want {
			if time.Now().After(deadline) {
				t.Fatalf("old hosts %q, want %q", a.c.OldHosts(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	b := startHost(t, srv, "hb", "192.0.2.2") // this version: not listed
	waitSynced(t, b.c, 5*time.Second)
	if _, err := a.c.etcd().Put(ctx, "/test/hosts/hold", `{"id":"hold","vtep":"192.0.2.9","port":4789}`); err != nil {
		t.Fatal(err)
	}
	wait("hold")
	if _, err := a.c.etcd().Put(ctx, "/test/hosts/hold", `{"id":"hold","vtep":"192.0.2.9","port":4789,"layout":2}`); err != nil {
		t.Fatal(err)
	}
	wait("")
}
