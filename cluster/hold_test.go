package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/etcdtest"
)

func holdView(hosts ...string) View {
	v := NewView()
	for i, h := range hosts {
		v.Hosts[h] = Host{ID: h, VTEP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})}
		v.Endpoints[h+"/e"] = Endpoint{ID: "e", Host: h, VNI: 7, MAC: "02:00:00:00:00:01"}
	}
	return v
}

// viewString lists a view's hosts and endpoint keys, sorted.
func viewString(v View) string {
	var s []string
	for id := range v.Hosts {
		s = append(s, id)
	}
	for key := range v.Endpoints {
		s = append(s, key)
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

func TestDepartureHold(t *testing.T) {
	var got []string
	var logs []string
	d := newDepartureHold("self", func(v View) { got = append(got, viewString(v)) },
		func(msg string, args ...any) { logs = append(logs, fmt.Sprint(msg, args)) })
	step := func(what, want string) {
		t.Helper()
		if len(got) == 0 || got[len(got)-1] != want {
			t.Fatalf("%s: fn got %q, want %q", what, got, want)
		}
	}
	d.update(holdView("a", "b", "self"), false) // the first view: nothing to hold yet
	step("first view", "a a/e b b/e self self/e")

	d.update(holdView("a", "self"), true) // settled: a departure is the peer's own
	step("departure while settled", "a a/e self self/e")

	d.update(holdView("a", "b", "self"), true)
	d.update(holdView(), false) // etcd revoked everything: a and b held, not this host's own
	step("departure in doubt", "a a/e b b/e")
	d.update(holdView("self"), false) // this host registered again
	step("self back", "a a/e b b/e self self/e")
	v := holdView("a", "self")
	delete(v.Endpoints, "a/e")
	d.update(v, false) // a came back without its endpoint: a withdrawal applies at once; b still held
	step("a back, withdrew e", "a b b/e self self/e")
	calls := len(got)
	d.release() // settled: b has not come back
	step("released", "a self self/e")
	d.release()
	if len(got) != calls+1 {
		t.Errorf("release with nothing held called fn again: %q", got[calls:])
	}
	d.update(holdView("a", "self"), false)
	d.update(holdView("self"), false) // a vanishes again
	d.update(holdView("a", "self"), false)
	step("a back", "a a/e self self/e")
	if len(logs) != 4 || !strings.Contains(logs[0], "[hosts a,b]") || !strings.Contains(logs[1], "[gone b]") ||
		!strings.Contains(logs[2], "[hosts a]") || !strings.Contains(logs[3], "held peer host is back[hosts a]") {
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
// the TTL and revokes every lease on waking) stays in the view until this
// host has renewed for a TTL again, then goes.
func TestDepartureHeldWhileLeaseInDoubt(t *testing.T) {
	srv := etcdtest.Start(t)
	a, b, w := peerSeen(t, srv)
	waitSynced(t, a.c, 5*time.Second)

	b.c.mu.Lock()
	b.c.renewed = time.Now().Add(-testTTL) // hb has not heard from etcd for a TTL
	b.c.mu.Unlock()
	a.stop()
	revoked := time.Now()
	if _, err := b.c.cli.Revoke(context.Background(), a.c.currentLease()); err != nil {
		t.Fatal(err)
	}
	w.until(t, 3*testTTL, "ha gone", func(v View) bool { return remoteIDs(v, "hb", 42) == "" })
	t.Logf("departure applied %v after the revoke (TTL %v)", time.Since(revoked).Round(time.Millisecond), testTTL)
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, v := range w.views {
		if _, ok := v.Hosts["ha"]; !ok && w.at[i].After(revoked) {
			if d := w.at[i].Sub(revoked); d < testTTL/2 {
				t.Errorf("a view without ha came %v after the revoke: the departure was not held", d)
			}
			break
		}
	}
}
