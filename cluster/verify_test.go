package cluster

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vxbridge/vxbridge/internal/testutil/etcdtest"
)

// forged returns what the sink last heard of the network's records that
// are not as their hosts wrote them: "<key>: <why>", sorted.
func (s *sink) forged() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []string{}
	for _, key := range slices.Sorted(maps.Keys(s.forgedKeys)) {
		out = append(out, key+": "+s.forgedKeys[key])
	}
	return out
}

// waitSeenForged waits until the sink has been told of each of want
// ("<key>: <why>") at some point: the host whose records they are may
// repair them (its full round, every TTL) before the last is written.
func (s *sink) waitSeenForged(t *testing.T, within time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s.mu.Lock()
		missing := slices.DeleteFunc(slices.Clone(want), func(w string) bool { return s.seenForged[w] })
		s.mu.Unlock()
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never told of forged records %q", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *sink) waitForged(t *testing.T, within time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := s.forged()
		if strings.Join(got, "\n") == strings.Join(want, "\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("forged records %q, want %q", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestForgedRecordsNotBelieved: anyone who can write a network's prefix
// (another host of it) writes, rewrites, replays and deletes a host's
// records there. The follower believes the host's own copies throughout,
// and says which records were forged; the host's next full round puts its
// records back.
func TestForgedRecordsNotBelieved(t *testing.T) {
	srv := etcdtest.Start(t)
	a, b, s := peerSeen(t, srv)
	ctx := context.Background()
	k := b.c.k
	rogue := b.c.etcd() // any client with write access to the network's prefix
	put := func(key, val string) {
		t.Helper()
		if _, err := rogue.Put(ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	const real = "e/ha/e1@10.1.0.2 m/ha@192.0.2.1 m/hb@192.0.2.2"
	// A rewrite of ha's endpoint with another address, a record of an
	// endpoint ha never had, and a member record of a host that is none.
	put(k.netEndpoint(42, "ha", "e1"), `{"id":"e1","host":"ha","vni":42,"mac":"02:00:00:00:00:01","ipv4":"10.1.0.66"}`)
	put(k.netEndpoint(42, "ha", "ghost"), `{"mac":"02:00:00:00:00:09","ipv4":"10.1.0.9"}`)
	put(k.netMember(42, "hz"), `{"host":"hz","vtep":"192.0.2.99","port":4789}`)
	s.waitSeenForged(t, 5*time.Second,
		"e/ha/e1: differs from host ha's own copy",
		"e/ha/ghost: host ha has no such record of its own",
		"m/hz: host hz has no such record of its own")
	s.until(t, time.Second, real)

	// A deletion of ha's records while its copies are there is not believed.
	if _, err := rogue.Delete(ctx, k.netMember(42, "ha")); err != nil {
		t.Fatal(err)
	}
	s.waitSeenForged(t, 5*time.Second, "m/ha: deleted, but host ha's own copy is still there")
	s.until(t, time.Second, real)

	// A listing believes the copies too: a forged value, a record no copy
	// backs.
	put(k.netEndpoint(42, "ha", "e1"), `{"mac":"02:00:00:00:00:01","ipv4":"10.1.0.67"}`)
	put(k.netEndpoint(42, "ha", "ghost"), `{"mac":"02:00:00:00:00:09","ipv4":"10.1.0.9"}`)
	st, err := b.c.listNetwork(ctx, newVerifier(b.c, 42))
	if err != nil {
		t.Fatal(err)
	}
	if got := stateString(st); !strings.HasPrefix(got, "e/ha/e1@10.1.0.2 m/") || strings.Contains(got, "ghost") || strings.Contains(got, "hz") {
		t.Fatalf("listing by a new verifier: %q", got)
	}
	if st.Forged["e/ha/ghost"] == "" || st.Forged["m/hz"] == "" {
		t.Fatalf("listing's forged records: %v", st.Forged)
	}

	// ha's next full round (every TTL) writes its records back and deletes
	// the one it never had; what is left forged is not ha's to clean.
	s.waitForged(t, 2*testTTL+2*time.Second, "m/hz: host hz has no such record of its own")
	s.until(t, time.Second, real)

	// ha withdraws e1 and a stale copy of its record is replayed: refused.
	old := mustGet(t, rogue, k.netEndpoint(42, "ha", "e1"))
	a.c.Withdraw("e1")
	s.until(t, 5*time.Second, "m/ha@192.0.2.1 m/hb@192.0.2.2")
	put(k.netEndpoint(42, "ha", "e1"), old)
	s.waitSeenForged(t, 5*time.Second, "e/ha/e1: host ha has no such record of its own")
	s.until(t, time.Second, "m/ha@192.0.2.1 m/hb@192.0.2.2")
}

// stateString is a listing as sink.stringLocked shows records.
func stateString(st NetworkState) string {
	s := newSink()
	s.Reset(st)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stringLocked()
}

func mustGet(t *testing.T, cli *clientv3.Client, key string) string {
	t.Helper()
	return string(mustKV(t, cli, key).Value)
}

func mustKV(t *testing.T, cli *clientv3.Client, key string) *mvccpb.KeyValue {
	t.Helper()
	resp, err := cli.Get(context.Background(), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v %v", key, resp, err)
	}
	return resp.Kvs[0]
}

// TestRevisionOfClaimFromCopy: the revision that decides which of two
// claims of an address is older is the copy's: deleting a host's record
// and writing it again (so it looks newer than a rival's) changes nothing.
func TestRevisionOfClaimFromCopy(t *testing.T) {
	srv := etcdtest.Start(t)
	_, b, s := peerSeen(t, srv)
	ctx := context.Background()
	key := b.c.k.netEndpoint(42, "ha", "e1")
	val := mustGet(t, b.c.etcd(), key)
	created := mustKV(t, b.c.etcd(), b.c.k.endpoint("ha", "e1")).CreateRevision
	s.mu.Lock()
	n0 := len(s.changes) // the listing's: the delete and the put come after
	s.mu.Unlock()
	if _, err := b.c.etcd().Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := b.c.etcd().Put(ctx, key, val); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		got := s.recs["e/ha/e1"].Endpoint.Rev
		n := len(s.changes)
		s.mu.Unlock()
		if n >= n0+2 && got == created {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoint's revision %d after %d changes (%d listed), want its copy's %d", got, n, n0, created)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHostIDLiveElsewhere: a second host started with the id of a live
// one (another VTEP) publishes nothing, claims nothing and says why and
// what to do; the first keeps its records. Once the first is gone for
// good, the second takes the id. A restart of the first (same VTEP, within
// the TTL) is no clone.
func TestHostIDLiveElsewhere(t *testing.T) {
	srv := etcdtest.Start(t)
	a := startHost(t, srv, "ha", "192.0.2.1")
	a.c.Rejoin(42)
	a.c.Publish(ep("e1", 42, "10.1.0.2"))
	waitSynced(t, a.c, 5*time.Second)
	before := snapshotPrefix(t, a.c)

	clone := startHostWith(t, srv, Config{HostID: "ha", HostIDFile: "/var/lib/vxbridge/host-id"}, "192.0.2.9")
	clone.c.Rejoin(42)
	clone.c.Publish(ep("e9", 42, "10.1.0.9"))
	var inUse *HostIDInUseError
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, msg := clone.c.Connected()
		if !ok && strings.Contains(msg, "is live on another host") {
			for _, want := range []string{"VTEP 192.0.2.1", "delete /var/lib/vxbridge/host-id", "vxbridge cluster add-host"} {
				if !strings.Contains(msg, want) {
					t.Errorf("message lacks %q: %s", want, msg)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("clone: connected %t %q, want the host id refused", ok, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := clone.c.ClaimNetwork(ctx, Network{VNI: 43, Subnets: pfx("10.43.0.0/24")}); !errors.As(err, &inUse) {
		t.Errorf("clone's network claim: %v, want HostIDInUseError", err)
	}
	if _, err := clone.c.ClaimBlock(ctx, "p", pfx("10.1.0.0/26")[0]); !errors.As(err, &inUse) {
		t.Errorf("clone's block claim: %v, want HostIDInUseError", err)
	}
	time.Sleep(testTTL) // a full round of both
	if after := snapshotPrefix(t, a.c); after != before {
		t.Fatalf("the clone changed the first host's records:\nbefore %s\nafter  %s", before, after)
	}

	// The first host dies for good: the second may have the id.
	a.stop()
	waitSynced(t, clone.c, 3*testTTL)
	if got := mustGet(t, clone.c.etcd(), clone.c.k.host("ha")); !strings.Contains(got, "192.0.2.9") {
		t.Fatalf("host record after the first host died: %s", got)
	}

	// A restart on the same VTEP within the TTL takes its own record over.
	clone.stop()
	again := startHostWith(t, srv, Config{HostID: "ha"}, "192.0.2.9")
	waitSynced(t, again.c, 5*time.Second)
}

// startHostWith is startHost with more of the Config.
func startHostWith(t *testing.T, srv *etcdtest.Server, cfg Config, vtep string) *testHost {
	t.Helper()
	cfg.Endpoints, cfg.Prefix, cfg.TTL = []string{srv.Endpoint}, "/test", testTTL
	return runHost(t, cfg, vtep)
}

// snapshotPrefix lists every key under the test prefix with its value
// and lease.
func snapshotPrefix(t *testing.T, c *Client) string {
	t.Helper()
	resp, err := c.etcd().Get(context.Background(), "/test/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key)+"="+string(kv.Value))
	}
	return strings.Join(out, "\n")
}

// TestRefusedDeletionLookedAtAgain: a member record deleted while its host's
// copy is there is not believed; once the copy goes too (an operator
// cleaning up by hand in that order), the follower lets the record go
// within recheckRefused, without waiting for a relisting.
func TestRefusedDeletionLookedAtAgain(t *testing.T) {
	srv := etcdtest.Start(t)
	_, b, s := peerSeen(t, srv)
	ctx := context.Background()
	k := b.c.k
	cli := b.c.etcd()
	// Host hc, which runs no publisher that would write its records back,
	// as it would have written them: the pair in one transaction.
	const val = `{"host":"hc","vtep":"192.0.2.3","port":4789}`
	netKey := k.netMember(42, "hc")
	copyKey := k.ownCopy(42, Change{Kind: MemberSet, Host: "hc"})
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut(netKey, val), clientv3.OpPut(copyKey, val)).Commit(); err != nil {
		t.Fatal(err)
	}
	const withHC = "e/ha/e1@10.1.0.2 m/ha@192.0.2.1 m/hb@192.0.2.2 m/hc@192.0.2.3"
	s.until(t, 5*time.Second, withHC)
	if _, err := cli.Delete(ctx, netKey); err != nil {
		t.Fatal(err)
	}
	s.waitSeenForged(t, 5*time.Second, "m/hc: deleted, but host hc's own copy is still there")
	s.until(t, time.Second, withHC)
	if _, err := cli.Delete(ctx, copyKey); err != nil {
		t.Fatal(err)
	}
	took := s.until(t, recheckRefused+3*time.Second, "e/ha/e1@10.1.0.2 m/ha@192.0.2.1 m/hb@192.0.2.2")
	t.Logf("the record went %v after its copy", took)
}
