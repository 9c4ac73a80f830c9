package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vxbridge/vxbridge/internal/testutil/etcdtest"
)

const testTTL = 2 * time.Second

type testHost struct {
	c      *Client
	cancel context.CancelFunc
	done   chan struct{}
}

// startHost runs a Client's publish loop with a short TTL.
func startHost(t *testing.T, srv *etcdtest.Server, id, vtep string) *testHost {
	t.Helper()
	c, err := New(Config{Endpoints: []string{srv.Endpoint}, Prefix: "/test", HostID: id, TTL: testTTL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &testHost{c: c, cancel: cancel, done: make(chan struct{})}
	c.SetHost(Host{VTEP: netip.MustParseAddr(vtep), Port: 4789})
	go func() { defer close(h.done); c.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

// stop ends the loop and the connection without revoking the lease, as a
// killed plugin would.
func (h *testHost) stop() {
	h.cancel()
	<-h.done
	h.c.Close()
}

func waitSynced(t *testing.T, c *Client, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatalf("host %s not synced within %s: %v", c.host, within, err)
	}
}

// watcher collects the views of c's Watch.
type watcher struct {
	mu    sync.Mutex
	views []View
	at    []time.Time // when each view came
	ch    chan struct{}
}

func watch(t *testing.T, c *Client) *watcher {
	w := &watcher{ch: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Watch(ctx, func(v View) {
			w.mu.Lock()
			w.views = append(w.views, v)
			w.at = append(w.at, time.Now())
			w.mu.Unlock()
			select {
			case w.ch <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// until waits for a view satisfying ok and returns how long it took.
func (w *watcher) until(t *testing.T, within time.Duration, what string, ok func(View) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(within)
	for {
		w.mu.Lock()
		var last View
		if n := len(w.views); n > 0 {
			last = w.views[n-1]
		}
		w.mu.Unlock()
		if last.Hosts != nil && ok(last) {
			return time.Since(start)
		}
		select {
		case <-w.ch:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no view with %s within %s; last view %+v", what, within, last)
		}
	}
}

func remoteIDs(v View, self string, vni uint32) string {
	var ids []string
	for _, r := range v.Remotes(self, vni) {
		ids = append(ids, r.Host+"/"+r.ID)
	}
	return strings.Join(ids, ",")
}

func ep(id string, vni uint32, ip string) Endpoint {
	return Endpoint{ID: id, VNI: vni, MAC: "02:00:00:00:00:01", IPv4: netip.MustParseAddr(ip)}
}

func TestPublishAndWatch(t *testing.T) {
	srv := etcdtest.Start(t)
	a := startHost(t, srv, "ha", "192.0.2.1")
	b := startHost(t, srv, "hb", "192.0.2.2")
	w := watch(t, b.c)

	start := time.Now()
	a.c.Publish(ep("e1", 42, "10.1.0.2")) // returns at once
	if d := time.Since(start); d > 10*time.Millisecond {
		t.Fatalf("Publish took %s: it must not wait for etcd", d)
	}
	took := w.until(t, 5*time.Second, "ha/e1", func(v View) bool { return remoteIDs(v, "hb", 42) == "ha/e1" })
	t.Logf("endpoint visible on the other host %s after Publish", took)
	w.until(t, time.Second, "ha/e1's VTEP", func(v View) bool {
		r := v.Remotes("hb", 42)
		return len(r) == 1 && r[0].VTEP == netip.MustParseAddr("192.0.2.1") && r[0].IPv4 == netip.MustParseAddr("10.1.0.2")
	})
	// Its own endpoints are not remotes of a host; other VNIs are separate.
	b.c.Publish(ep("e2", 42, "10.1.0.3"))
	a.c.Publish(ep("e3", 7, "10.7.0.2"))
	w.until(t, 5*time.Second, "hb/e2 published", func(v View) bool { _, ok := v.Endpoints["hb/e2"]; return ok })
	w.until(t, 5*time.Second, "ha/e3 published", func(v View) bool { return remoteIDs(v, "hb", 7) == "ha/e3" })
	if got := remoteIDs(w.views[len(w.views)-1], "hb", 42); got != "ha/e1" {
		t.Fatalf("remotes of hb on 42: %q", got)
	}
	a.c.Withdraw("e1")
	w.until(t, 5*time.Second, "ha/e1 withdrawn", func(v View) bool { return remoteIDs(v, "hb", 42) == "" })
}

// peerSeen starts hosts ha and hb on srv, publishes ha's endpoint e1 and
// waits until hb's watch sees it.
func peerSeen(t *testing.T, srv *etcdtest.Server) (a, b *testHost, w *watcher) {
	t.Helper()
	a = startHost(t, srv, "ha", "192.0.2.1")
	b = startHost(t, srv, "hb", "192.0.2.2")
	w = watch(t, b.c)
	a.c.Publish(ep("e1", 42, "10.1.0.2"))
	w.until(t, 5*time.Second, "ha/e1", func(v View) bool { return remoteIDs(v, "hb", 42) == "ha/e1" })
	return a, b, w
}

// TestHostExpiry: a host that dies (no revoke) is dropped with its
// endpoints once its lease runs out.
func TestHostExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out TTLs or an outage; skipped with -short")
	}
	srv := etcdtest.Start(t)
	a, _, w := peerSeen(t, srv)
	a.stop()
	took := w.until(t, testTTL+3*time.Second, "ha gone", func(v View) bool {
		_, host := v.Hosts["ha"]
		_, e := v.Endpoints["ha/e1"]
		return !host && !e
	})
	t.Logf("dead host dropped %s after it stopped (TTL %s)", took, testTTL)
}

// TestWatchRelistsAfterCompaction: a watch resuming from a compacted
// revision reports it, and Watch lists again and sees everything.
func TestWatchRelistsAfterCompaction(t *testing.T) {
	srv := etcdtest.Start(t)
	a := startHost(t, srv, "ha", "192.0.2.1")
	a.c.Publish(ep("e1", 42, "10.1.0.2"))
	waitSynced(t, a.c, 5*time.Second)
	view, rev, err := a.c.list(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	a.c.Publish(ep("e2", 42, "10.1.0.3"))
	waitSynced(t, a.c, 5*time.Second)
	a.c.Publish(ep("e3", 43, "10.3.0.3"))
	waitSynced(t, a.c, 5*time.Second)
	resp, err := a.c.cli.Get(context.Background(), "/test/hosts/ha")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.cli.Compact(context.Background(), resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = a.c.follow(ctx, view, rev, func(View) {})
	var comp errCompacted
	if !errors.As(err, &comp) {
		t.Fatalf("follow from a compacted revision: %v, want errCompacted", err)
	}
	// The Watch loop re-lists and carries on.
	w := watch(t, a.c)
	w.until(t, 5*time.Second, "both endpoints", func(v View) bool { return len(v.Endpoints) == 3 })
}

// TestEtcdOutage: publishing never blocks while etcd is down, and after it
// returns (later than the TTL) everything converges without a restart.
func TestEtcdOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out TTLs or an outage; skipped with -short")
	}
	srv := etcdtest.Start(t)
	a, _, w := peerSeen(t, srv)

	waitSynced(t, a.c, 5*time.Second)
	if ok, why := a.c.Connected(); !ok {
		t.Fatalf("Connected before the outage: %s", why)
	}
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
	w.mu.Lock()
	before := len(w.views)
	w.mu.Unlock()
	srv.Restart()
	took := w.until(t, 15*time.Second, "only ha/e2", func(v View) bool { return remoteIDs(v, "hb", 42) == "ha/e2" })
	t.Logf("converged %s after etcd came back", took)
	if took > 5*time.Second {
		t.Errorf("converged %s after etcd came back, want within a few seconds", took)
	}
	// etcd gives leases a fresh TTL when it starts: the hosts take theirs up
	// again in time, so no peer ever sees a host vanish and come back.
	time.Sleep(2 * testTTL)
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, v := range w.views[before:] {
		if _, ok := v.Hosts["ha"]; !ok {
			t.Fatalf("view %d after etcd returned lacks host ha: %+v", i, v)
		}
	}
	waitSynced(t, a.c, 10*time.Second)
}

func TestClaimNetwork(t *testing.T) {
	srv := etcdtest.Start(t)
	a := startHost(t, srv, "ha", "192.0.2.1")
	b := startHost(t, srv, "hb", "192.0.2.2")
	waitSynced(t, a.c, 5*time.Second)
	waitSynced(t, b.c, 5*time.Second)
	ctx := context.Background()
	net42 := Network{VNI: 42, Subnets: pfx("10.1.0.0/24", "fd01::/64")}
	if err := a.c.ClaimNetwork(ctx, net42); err != nil {
		t.Fatal(err)
	}
	if err := a.c.ClaimNetwork(ctx, net42); err != nil {
		t.Fatalf("replayed claim: %v", err)
	}
	err := b.c.ClaimNetwork(ctx, Network{VNI: 42, Subnets: pfx("10.2.0.0/24")})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "10.1.0.0/24") || !strings.Contains(err.Error(), "10.2.0.0/24") {
		t.Fatalf("same VNI, other subnet: %v", err)
	}
	err = b.c.ClaimNetwork(ctx, Network{VNI: 43, Subnets: pfx("10.1.0.0/24")})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "vxlan.id 42") || !strings.Contains(err.Error(), "vxlan.id 43") {
		t.Fatalf("same subnet, other VNI: %v", err)
	}
	if err := b.c.ClaimNetwork(ctx, net42); err != nil {
		t.Fatalf("same network on the second host: %v", err)
	}
	// Once no host has VNI 42 any more, it is free for another subnet.
	a.c.LeaveNetwork(42)
	b.c.LeaveNetwork(42)
	waitSynced(t, a.c, 5*time.Second)
	waitSynced(t, b.c, 5*time.Second)
	if err := b.c.ClaimNetwork(ctx, Network{VNI: 42, Subnets: pfx("10.3.0.0/24")}); err != nil {
		t.Fatalf("claim of a VNI no host has: %v", err)
	}
	// Membership is on the lease: re-written by the loop after a purge.
	if _, err := b.c.cli.Delete(ctx, "/test/members/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	b.c.Publish(ep("kick", 1, "10.9.0.1"))
	waitSynced(t, b.c, 5*time.Second)
	if live, err := b.c.vniLive(ctx, 42); err != nil || !live {
		t.Fatalf("membership not restored: %t %v", live, err)
	}
}

func TestClaimNetworkWithoutEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out TTLs or an outage; skipped with -short")
	}
	srv := etcdtest.Start(t)
	a := startHost(t, srv, "ha", "192.0.2.1")
	waitSynced(t, a.c, 5*time.Second)
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	err := a.c.ClaimNetwork(ctx, Network{VNI: 5, Subnets: pfx("10.5.0.0/24")})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("claim with etcd down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > RequestTimeout+2*time.Second {
		t.Fatalf("claim with etcd down took %s", d)
	}
}

func TestBlocks(t *testing.T) {
	srv := etcdtest.Start(t)
	a := startHost(t, srv, "ha", "192.0.2.1")
	b := startHost(t, srv, "hb", "192.0.2.2")
	waitSynced(t, a.c, 5*time.Second)
	waitSynced(t, b.c, 5*time.Second)
	ctx := context.Background()
	pool := PoolKey(netip.MustParsePrefix("10.1.0.0/24"))
	b0, b1 := netip.MustParsePrefix("10.1.0.0/26"), netip.MustParsePrefix("10.1.0.64/26")
	claim := func(h *testHost, blk netip.Prefix) bool {
		t.Helper()
		ok, err := h.c.ClaimBlock(ctx, pool, blk)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !claim(a, b0) || !claim(a, b0) {
		t.Fatal("a could not claim (or re-claim) a free block")
	}
	if claim(b, b0) {
		t.Fatal("b took a's live block")
	}
	if !claim(b, b1) {
		t.Fatal("b could not claim a free block")
	}
	held, err := a.c.HeldBlocks(ctx, pool)
	if err != nil || len(held) != 2 || held[b0] != "ha" || held[b1] != "hb" {
		t.Fatalf("HeldBlocks = %v, %v", held, err)
	}
	// A dead host's block is reclaimed only once its endpoints are gone.
	a.c.Publish(ep("e1", 42, "10.1.0.2"))
	waitSynced(t, a.c, 5*time.Second)
	if _, err := a.c.cli.Delete(ctx, "/test/hosts/ha"); err != nil { // host record gone, endpoint still there
		t.Fatal(err)
	}
	if claim(b, b0) {
		t.Fatal("block reclaimed while its host's endpoints are still published")
	}
	a.stop()
	deadline := time.Now().Add(testTTL + 5*time.Second)
	for !claim(b, b0) {
		if time.Now().After(deadline) {
			t.Fatal("dead host's block never reclaimed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := b.c.ReleaseBlock(ctx, pool, b1); err != nil {
		t.Fatal(err)
	}
	if held, _ := b.c.HeldBlocks(ctx, pool); len(held) != 1 || held[b0] != "hb" {
		t.Fatalf("after reclaim and release: %v", held)
	}
}

// TestBlockClaimRace: many hosts claiming one block at once, one wins.
func TestBlockClaimRace(t *testing.T) {
	srv := etcdtest.Start(t)
	blk := netip.MustParsePrefix("10.1.0.0/26")
	var wg sync.WaitGroup
	wins := make(chan string, 8)
	for i := range 8 {
		// Live hosts: a block of a dead one could rightly be reclaimed.
		c := startHost(t, srv, fmt.Sprintf("h%d", i), fmt.Sprintf("192.0.2.%d", i+1)).c
		waitSynced(t, c, 5*time.Second)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := c.ClaimBlock(context.Background(), "p", blk)
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins <- c.host
			}
		}()
	}
	wg.Wait()
	close(wins)
	var winners []string
	for w := range wins {
		winners = append(winners, w)
	}
	if len(winners) != 1 {
		t.Fatalf("winners: %v, want exactly one", winners)
	}
}
