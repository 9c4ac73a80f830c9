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
	return runHost(t, Config{Endpoints: []string{srv.Endpoint}, Prefix: "/test", HostID: id, TTL: testTTL}, vtep)
}

// runHost runs a Client of cfg with VTEP vtep until the test ends.
func runHost(t *testing.T, cfg Config, vtep string) *testHost {
	t.Helper()
	c, err := New(cfg)
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
	// Membership is on the lease: re-written by the loop's next full round
	// (every TTL) after a purge.
	if _, err := b.c.etcd().Delete(ctx, "/test/members/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * testTTL)
	for {
		live, err := b.c.vniLive(ctx, 42)
		if err == nil && live {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("membership not restored within %s: %t %v", 2*testTTL, live, err)
		}
		time.Sleep(50 * time.Millisecond)
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
	a.c.Rejoin(42)
	a.c.Publish(ep("e1", 42, "10.1.0.2"))
	waitSynced(t, a.c, 5*time.Second)
	if _, err := a.c.etcd().Delete(ctx, "/test/hosts/ha"); err != nil { // host record gone, endpoint still there
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
