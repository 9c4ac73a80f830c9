package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	helpers "github.com/docker/go-plugins-helpers/ipam"
)

// TestBlocksRecheckedAfterLapse: a host whose lease lapsed while another
// host reclaimed its block hands out no new address from that block once
// it has a new lease; its container there keeps its address; a block no
// one took meanwhile is claimed again and used.
func TestBlocksRecheckedAfterLapse(t *testing.T) {
	e := newFakeEtcd()
	a := newBlockHost(t, e, "ha", t.TempDir(), map[string]string{OptBlockSize: "28"})
	kept := a.alloc(t) // 10.1.0.2 in 10.1.0.0/28
	ab := a.f.byPool[netip.MustParsePrefix("10.1.0.0/24")]
	for len(ab.blocks) < 2 { // and a second block
		a.alloc(t)
		ab.prefetches.Wait()
	}
	first, second := ab.blocks[0], ab.blocks[1]
	e.mu.Lock()
	e.epochs["ha"] = 1 // the lease of a start
	e.mu.Unlock()
	a.alloc(t)
	calls := e.calls
	a.alloc(t)
	if e.calls != calls {
		t.Fatalf("a host whose lease did not change asked etcd %d times", e.calls-calls)
	}

	// ha's lease lapses: hb reclaims its first block, and its second is
	// not in etcd at all any more.
	e.mu.Lock()
	e.blocks["10.1.0.0_24"][first] = "hb"
	delete(e.blocks["10.1.0.0_24"], second)
	e.epochs["ha"] = 2
	e.mu.Unlock()
	for range 20 {
		if got := a.alloc(t); first.Contains(got) {
			t.Fatalf("%s handed out from block %s, which host hb holds now", got, first)
		}
	}
	e.mu.Lock()
	again := e.blocks["10.1.0.0_24"][second]
	e.mu.Unlock()
	if slices.Contains(ab.blocks, first) || !slices.Contains(ab.blocks, second) || again != "ha" {
		t.Fatalf("blocks after the re-check: %v (etcd: %s held by %q)", ab.blocks, second, again)
	}
	if !slices.Contains(ab.addressesIn(first), kept) {
		t.Fatalf("the container's address %s in the lost block was let go", kept)
	}

	// A new lease while etcd is away: nothing is handed out until etcd
	// confirms the blocks, and the error says why.
	e.mu.Lock()
	e.epochs["ha"], e.down = 3, true
	e.mu.Unlock()
	_, err := a.d.RequestAddress(&helpers.RequestAddressRequest{PoolID: a.pool})
	if !errors.Is(err, errDown) || !strings.Contains(err.Error(), "must confirm") {
		t.Fatalf("allocation after a new lease with etcd away: %v", err)
	}
}
