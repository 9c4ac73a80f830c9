package ipam

import (
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

}

// TestHeldBlocksUsedWhileEtcdAway: a plugin restarted while etcd is away,
// and a host whose lease changed while etcd stops answering, hand out
// addresses from the blocks of their state file, unconfirmed; once etcd
// answers, the next allocation confirms them first.
func TestHeldBlocksUsedWhileEtcdAway(t *testing.T) {
	e := newFakeEtcd()
	dir := t.TempDir()
	a := newBlockHost(t, e, "ha", dir, map[string]string{OptBlockSize: "28"})
	held := netip.MustParsePrefix("10.1.0.0/28")
	if got := a.alloc(t); !held.Contains(got) {
		t.Fatalf("first address %s, want one of %s", got, held)
	}
	a.f.byPool[netip.MustParsePrefix("10.1.0.0/24")].prefetches.Wait()
	a.st.Close()

	e.mu.Lock()
	e.down, e.silent = true, true // etcd stopped long ago
	e.mu.Unlock()
	a = newBlockHost(t, e, "ha", dir, nil) // the restarted plugin: no lease yet
	if got := a.alloc(t); !held.Contains(got) {
		t.Fatalf("restarted with etcd away: %s, want an address of the held block %s", got, held)
	}
	e.mu.Lock()
	e.silent = false // etcd answered lately, then stopped:
	e.epochs["ha"]++ // the lease changed
	e.mu.Unlock()
	if got := a.alloc(t); !held.Contains(got) {
		t.Fatalf("a new lease, etcd stopped since: %s, want an address of the held block %s", got, held)
	}

	e.mu.Lock()
	e.down = false
	calls := e.calls
	e.mu.Unlock()
	a.alloc(t)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.calls == calls {
		t.Fatal("etcd is back, and the unconfirmed blocks were used without asking it")
	}
	if ab := a.f.byPool[netip.MustParsePrefix("10.1.0.0/24")]; !ab.confirmed || ab.unconfirmedWhy != nil {
		t.Fatalf("blocks not confirmed once etcd answered: confirmed %t, why %v", ab.confirmed, ab.unconfirmedWhy)
	}
}

// TestLostBlockRefusedWhenEtcdBack: a host hands out an address from its
// block while etcd is away; meanwhile another host took the block (the
// pool is full). Once etcd answers, no address comes from that block, the
// refusal names the block, its holder and this host's addresses in it,
// and LostBlocks lists them.
func TestLostBlockRefusedWhenEtcdBack(t *testing.T) {
	e := newFakeEtcd()
	opts := map[string]string{OptBlockSize: "25"}
	a := newBlockHost(t, e, "ha", t.TempDir(), opts)
	b := newBlockHost(t, e, "hb", t.TempDir(), opts)
	first := a.alloc(t) // ha: 10.1.0.0/25
	b.alloc(t)          // hb: 10.1.0.128/25
	lost := netip.MustParsePrefix("10.1.0.0/25")

	e.mu.Lock()
	e.down, e.silent = true, true
	e.epochs["ha"]++ // ha's lease lapsed: hb reclaims its block
	e.mu.Unlock()
	during := a.alloc(t)
	e.mu.Lock()
	e.blocks["10.1.0.0_24"][lost] = "hb"
	e.down, e.silent = false, false
	e.mu.Unlock()

	resp, err := a.d.RequestAddress(&helpers.RequestAddressRequest{PoolID: a.pool})
	if err == nil {
		t.Fatalf("ha handed out %s once etcd was back, though hb holds %s", resp.Address, lost)
	}
	wantErr(t, err, ErrPoolExhausted, "block 10.1.0.0/25 went to host hb")
	for _, addr := range []netip.Addr{first, during} {
		if !strings.Contains(err.Error(), addr.String()) {
			t.Errorf("the refusal does not name %s, an address of ha's in the lost block: %v", addr, err)
		}
	}
	got := a.f.LostBlocks()
	if len(got) != 1 || got[0].Block != lost || got[0].Holder != "hb" || !slices.Equal(got[0].Addresses, []netip.Addr{first, during}) {
		t.Fatalf("LostBlocks = %+v, want %s held by hb with %s and %s", got, lost, first, during)
	}
}
