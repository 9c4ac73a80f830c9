package ipam

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	helpers "github.com/docker/go-plugins-helpers/ipam"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/internal/testutil/clustertest"
	"github.com/vxbridge/vxbridge/internal/testutil/etcdtest"
)

// TestBlocksAgainstEtcd: three hosts on one real etcd allocate at once from
// the same subnet and never hand out an address twice.
func TestBlocksAgainstEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	var hosts []*blockHost
	for _, id := range []string{"h1", "h2", "h3"} {
		c := clustertest.Run(t, cluster.Config{Endpoints: []string{srv.Endpoint}, HostID: id, TTL: 5 * time.Second}, "192.0.2.1")
		ctx := context.Background()
		h := &blockHost{st: openStore(t, t.TempDir()), cross: true}
		h.f = NewBlockAllocators(BlockConfig{Store: h.st, Leaser: c})
		h.d = newDriver(t, h.st, Options{NewAllocator: h.f.Factory})
		h.pool = requestPool(t, h.d, helpers.RequestPoolRequest{Pool: "10.1.0.0/24", Options: map[string]string{OptBlockSize: "28"}}).PoolID
		requestAddr(t, h.d, h.pool, "", gatewayOpts)
		if err := h.f.Prefetch(ctx, netip.MustParsePrefix("10.1.0.0/24")); err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	var mu sync.Mutex
	seen := map[netip.Addr]bool{}
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 40 {
				resp, err := h.d.RequestAddress(&helpers.RequestAddressRequest{PoolID: h.pool})
				if err != nil {
					t.Error(err)
					return
				}
				a := netip.MustParsePrefix(resp.Address).Addr()
				mu.Lock()
				if seen[a] {
					t.Errorf("%s handed out twice", a)
				}
				seen[a] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, h := range hosts {
		h.f.byPool[netip.MustParsePrefix("10.1.0.0/24")].prefetches.Wait()
	}
	if len(seen) != 120 {
		t.Fatalf("%d distinct addresses, want 120", len(seen))
	}
}

// etcdBlockHost is a host with a real cluster client whose publishing
// loop the test stops and starts (a partition, a return).
func etcdBlockHost(t *testing.T, srv *etcdtest.Server, id string) (*blockHost, *cluster.Client) {
	t.Helper()
	return etcdBlockHostIn(t, srv, id, t.TempDir())
}

// etcdBlockHostIn is etcdBlockHost on the state directory dir: a second
// call on the same dir is the plugin restarted.
func etcdBlockHostIn(t *testing.T, srv *etcdtest.Server, id, dir string) (*blockHost, *cluster.Client) {
	t.Helper()
	c, err := cluster.New(cluster.Config{Endpoints: []string{srv.Endpoint}, HostID: id, TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetHost(cluster.Host{VTEP: netip.MustParseAddr("192.0.2.1"), Port: 4789})
	h := &blockHost{st: openStore(t, dir), cross: true}
	h.f = NewBlockAllocators(BlockConfig{Store: h.st, Leaser: c})
	h.d = newDriver(t, h.st, Options{NewAllocator: h.f.Factory})
	if pools, _ := h.st.Pools(); len(pools) == 1 {
		h.pool = pools[0].ID
		return h, c
	}
	h.pool = requestPool(t, h.d, helpers.RequestPoolRequest{Pool: "10.1.0.0/26", Options: map[string]string{OptBlockSize: "28"}}).PoolID
	requestAddr(t, h.d, h.pool, "", gatewayOpts)
	return h, c
}

// runLoop runs c's publishing loop until the returned stop.
func runLoop(t *testing.T, c *cluster.Client) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return sync.OnceFunc(stop)
}

// TestBlockLostDuringPartition: host ha is cut off longer than its TTL,
// host hb reclaims ha's block (the pool is full), and when ha is back with
// a new lease it hands out no address from that block but takes a free
// one; its container in the lost block keeps its address.
func TestBlockLostDuringPartition(t *testing.T) {
	srv := etcdtest.Start(t)
	a, ac := etcdBlockHost(t, srv, "ha")
	b, bc := etcdBlockHost(t, srv, "hb")
	stopA := runLoop(t, ac)
	runLoop(t, bc)
	kept := a.alloc(t) // ha: block 10.1.0.0/28
	lost := netip.MustParsePrefix("10.1.0.0/28")
	if !lost.Contains(kept) {
		t.Fatalf("ha's first address %s", kept)
	}
	b.alloc(t) // hb: 10.1.0.16/28
	hc := clustertest.Run(t, cluster.Config{Endpoints: []string{srv.Endpoint}, HostID: "hc"}, "192.0.2.3")
	ctx := context.Background()
	for _, blk := range []string{"10.1.0.32/28", "10.1.0.48/28"} { // the rest of the pool
		if ok, err := hc.ClaimBlock(ctx, "10.1.0.0_26", netip.MustParsePrefix(blk)); !ok || err != nil {
			t.Fatalf("hc claims %s: %t %v", blk, ok, err)
		}
	}

	stopA() // cut off: its lease runs out
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := b.d.RequestAddress(&helpers.RequestAddressRequest{PoolID: b.pool})
		if err == nil && lost.Contains(netip.MustParsePrefix(resp.Address).Addr()) {
			break // hb hands out from ha's block
		}
		if time.Now().After(deadline) {
			t.Fatalf("hb never reclaimed ha's block: %v %v", resp, err)
		}
		if err != nil {
			time.Sleep(100 * time.Millisecond) // full until ha's lease runs out
		}
	}
	if err := hc.ReleaseBlock(ctx, "10.1.0.0_26", netip.MustParsePrefix("10.1.0.48/28")); err != nil {
		t.Fatal(err)
	}

	runLoop(t, ac) // back: a new lease
	for range 5 {
		if got := a.alloc(t); lost.Contains(got) || !netip.MustParsePrefix("10.1.0.48/28").Contains(got) {
			t.Fatalf("ha, back, handed out %s: want an address of the free block 10.1.0.48/28, none of hb's %s", got, lost)
		}
	}
	if !slices.Contains(a.f.byPool[netip.MustParsePrefix("10.1.0.0/26")].addressesIn(lost), kept) {
		t.Fatalf("ha's container address %s was let go", kept)
	}
}

// TestRestartedPluginWhileEtcdStops is e2e TestMultiHost/EtcdOutage at the
// IPAM's tier: a plugin restarted (a new lease, its blocks not confirmed
// under it) makes its first allocations just after etcd stopped, and long
// after; both come from its held block within the check's bound, and once
// etcd is back the next allocation confirms the block.
func TestRestartedPluginWhileEtcdStops(t *testing.T) {
	srv := etcdtest.Start(t)
	dir := t.TempDir()
	a, ac := etcdBlockHostIn(t, srv, "ha", dir)
	stop := runLoop(t, ac)
	held := netip.MustParsePrefix("10.1.0.0/28")
	if got := a.alloc(t); !held.Contains(got) {
		t.Fatalf("first address %s", got)
	}
	a.f.byPool[netip.MustParsePrefix("10.1.0.0/26")].prefetches.Wait()
	stop()
	ac.Close()
	a.st.Close()

	a, ac = etcdBlockHostIn(t, srv, "ha", dir) // the restarted plugin
	runLoop(t, ac)
	for ac.LeaseEpoch() == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	srv.Stop()
	for _, when := range []string{"just after etcd stopped", "etcd stopped for a while"} {
		start := time.Now()
		got := a.alloc(t)
		took := time.Since(start)
		t.Logf("%s: %s in %s", when, got, took.Round(time.Millisecond))
		if !held.Contains(got) || took > checkTimeout+time.Second {
			t.Fatalf("%s: %s after %s, want an address of the held block %s within %s", when, got, took, held, checkTimeout+time.Second)
		}
	}
	ab := a.f.byPool[netip.MustParsePrefix("10.1.0.0/26")]
	confirmed := func() (bool, error) {
		ab.bmu.Lock()
		defer ab.bmu.Unlock()
		return ab.confirmed, ab.unconfirmedWhy
	}
	if ok, _ := confirmed(); ok {
		t.Fatal("blocks confirmed while etcd was stopped")
	}
	srv.Restart()
	deadline := time.Now().Add(15 * time.Second)
	for a.alloc(t); ; a.alloc(t) {
		ok, why := confirmed()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd is back and the held blocks are still unconfirmed (%v)", why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestForgedBlockKeysChangeNoHolder: a third host deletes host hb's
// blocks/ key and writes a claim of its own for hb's block, in a full
// pool: hc cannot take the block (the pool is exhausted), and hb,
// restarted on a new lease, checks its block and keeps handing out
// addresses from it.
func TestForgedBlockKeysChangeNoHolder(t *testing.T) {
	srv := etcdtest.Start(t)
	dir := t.TempDir()
	b, bc := etcdBlockHostIn(t, srv, "hb", dir)
	stopB := runLoop(t, bc)
	c, cc := etcdBlockHost(t, srv, "hc")
	runLoop(t, cc)
	held := netip.MustParsePrefix("10.1.0.0/28")
	if got := b.alloc(t); !held.Contains(got) {
		t.Fatalf("hb's first address %s", got)
	}
	b.f.byPool[netip.MustParsePrefix("10.1.0.0/26")].prefetches.Wait()
	hd := clustertest.Run(t, cluster.Config{Endpoints: []string{srv.Endpoint}, HostID: "hd"}, "192.0.2.4")
	ctx := context.Background()
	for _, blk := range []string{"10.1.0.16/28", "10.1.0.32/28", "10.1.0.48/28"} { // the rest of the pool
		if ok, err := hd.ClaimBlock(ctx, "10.1.0.0_26", netip.MustParsePrefix(blk)); !ok || err != nil {
			t.Fatalf("hd claims %s: %t %v", blk, ok, err)
		}
	}
	evil, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer evil.Close()
	if _, err := evil.Delete(ctx, "/vxbridge/blocks/10.1.0.0_26/10.1.0.0_28"); err != nil {
		t.Fatal(err)
	}
	if _, err := evil.Put(ctx, "/vxbridge/hostblocks/ha/10.1.0.0_26/10.1.0.0_28", ""); err != nil {
		t.Fatal(err)
	}

	if resp, err := c.d.RequestAddress(&helpers.RequestAddressRequest{PoolID: c.pool}); err == nil {
		t.Fatalf("hc handed out %s: the pool is full, %s is hb's", resp.Address, held)
	}
	stopB()
	bc.Close()
	b.st.Close()
	b, bc = etcdBlockHostIn(t, srv, "hb", dir) // restarted: a new lease, its block checked again
	runLoop(t, bc)
	for range 3 {
		if got := b.alloc(t); !held.Contains(got) {
			t.Fatalf("hb, restarted, handed out %s: want one of its block %s", got, held)
		}
	}
	if lost := b.f.LostBlocks(); len(lost) != 0 {
		t.Fatalf("hb dropped blocks as lost: %+v", lost)
	}
}
