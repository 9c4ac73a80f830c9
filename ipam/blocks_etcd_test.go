package ipam

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	helpers "github.com/docker/go-plugins-helpers/ipam"

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
