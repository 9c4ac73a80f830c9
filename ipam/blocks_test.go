package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	helpers "github.com/docker/go-plugins-helpers/ipam"

	"github.com/vxbridge/vxbridge/store"
)

// fakeEtcd is the blocks part of the cluster state, shared by fake hosts.
type fakeEtcd struct {
	mu     sync.Mutex
	blocks map[string]map[netip.Prefix]string
	dead   map[string]bool   // hosts whose lease expired
	epochs map[string]uint64 // each host's lease epoch
	down   bool
	silent bool // no answer lately: InContact false
	calls  int
}

func newFakeEtcd() *fakeEtcd {
	return &fakeEtcd{blocks: map[string]map[netip.Prefix]string{}, dead: map[string]bool{}, epochs: map[string]uint64{}}
}

type fakeLeaser struct {
	e    *fakeEtcd
	host string
}

var errDown = errors.New("etcd unreachable")

func (l fakeLeaser) HostID() string { return l.host }

func (l fakeLeaser) LeaseEpoch() uint64 {
	l.e.mu.Lock()
	defer l.e.mu.Unlock()
	return l.e.epochs[l.host]
}

func (l fakeLeaser) InContact() bool {
	l.e.mu.Lock()
	defer l.e.mu.Unlock()
	return !l.e.silent
}

func (l fakeLeaser) Unreachable(err error) bool { return errors.Is(err, errDown) }

func (l fakeLeaser) HeldBlocks(_ context.Context, pool string) (map[netip.Prefix]string, error) {
	l.e.mu.Lock()
	defer l.e.mu.Unlock()
	l.e.calls++
	if l.e.down {
		return nil, errDown
	}
	out := map[netip.Prefix]string{}
	for b, h := range l.e.blocks[pool] {
		if l.e.dead[h] {
			h = "" // its claim went with its lease, as cluster.HeldBlocks says
		}
		out[b] = h
	}
	return out, nil
}

func (l fakeLeaser) ClaimBlock(_ context.Context, pool string, b netip.Prefix) (bool, error) {
	l.e.mu.Lock()
	defer l.e.mu.Unlock()
	l.e.calls++
	if l.e.down {
		return false, errDown
	}
	if l.e.blocks[pool] == nil {
		l.e.blocks[pool] = map[netip.Prefix]string{}
	}
	if h, ok := l.e.blocks[pool][b]; ok && h != l.host && !l.e.dead[h] {
		return false, nil
	}
	l.e.blocks[pool][b] = l.host
	return true, nil
}

func (l fakeLeaser) ReleaseBlock(_ context.Context, pool string, b netip.Prefix) error {
	l.e.mu.Lock()
	defer l.e.mu.Unlock()
	if l.e.down {
		return errDown
	}
	if l.e.blocks[pool][b] == l.host {
		delete(l.e.blocks[pool], b)
	}
	return nil
}

type blockHost struct {
	st    *store.DB
	f     *BlockAllocators
	d     *Driver
	pool  string
	cross bool
}

func newBlockHost(t *testing.T, e *fakeEtcd, id, dir string, opts map[string]string) *blockHost {
	t.Helper()
	h := &blockHost{st: openStore(t, dir), cross: true}
	h.f = NewBlockAllocators(BlockConfig{Store: h.st, Leaser: fakeLeaser{e: e, host: id},
		CrossHost: func(netip.Prefix) bool { return h.cross }})
	h.d = newDriver(t, h.st, Options{NewAllocator: h.f.Factory})
	if pools, _ := h.st.Pools(); len(pools) == 1 {
		h.pool = pools[0].ID
		return h
	}
	h.pool = requestPool(t, h.d, helpers.RequestPoolRequest{Pool: "10.1.0.0/24", Options: opts}).PoolID
	requestAddr(t, h.d, h.pool, "", gatewayOpts)
	return h
}

func (h *blockHost) alloc(t *testing.T) netip.Addr {
	t.Helper()
	return netip.MustParsePrefix(requestAddr(t, h.d, h.pool, "", nil)).Addr()
}

func TestBlockBits(t *testing.T) {
	v4 := store.Pool{Prefix: netip.MustParsePrefix("10.0.0.0/16"), Range: netip.MustParsePrefix("10.0.0.0/16")}
	v6 := store.Pool{V6: true, Prefix: netip.MustParsePrefix("fd00::/64"), Range: netip.MustParsePrefix("fd00::/64")}
	small := store.Pool{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Range: netip.MustParsePrefix("10.0.0.0/28")}
	cases := []struct {
		p    store.Pool
		opt  string
		want int
	}{
		{v4, "", 26}, {v6, "", 122}, {v4, "24", 24}, {v4, "/28", 28}, {small, "", 28}, {v6, "120", 120},
	}
	for _, c := range cases {
		p := c.p
		if c.opt != "" {
			p.Options = map[string]string{OptBlockSize: c.opt}
		}
		if got, err := BlockBits(p); err != nil || got != c.want {
			t.Errorf("BlockBits(%s, %q) = %d, %v; want %d", p.Range, c.opt, got, err, c.want)
		}
	}
	for _, bad := range []string{"x", "0", "31", "-1"} {
		p := v4
		p.Options = map[string]string{OptBlockSize: bad}
		if _, err := BlockBits(p); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), OptBlockSize) {
			t.Errorf("block size %q: %v", bad, err)
		}
	}
}

// TestBlocksUniqueAcrossHosts: hosts sharing a subnet hand out disjoint
// addresses, each from its own blocks, and the gateway from none.
func TestBlocksUniqueAcrossHosts(t *testing.T) {
	e := newFakeEtcd()
	a := newBlockHost(t, e, "ha", t.TempDir(), nil)
	b := newBlockHost(t, e, "hb", t.TempDir(), map[string]string{OptBlockSize: "27"})
	if got := a.alloc(t); got != netip.MustParseAddr("10.1.0.2") {
		t.Fatalf("a's first address %s, want 10.1.0.2 (block 10.1.0.0/26, after the gateway)", got)
	}
	if got := b.alloc(t); got.Compare(netip.MustParseAddr("10.1.0.64")) < 0 {
		t.Fatalf("b's first address %s is in a's block", got)
	}
	seen := map[netip.Addr]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, h := range []*blockHost{a, b} {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					resp, err := h.d.RequestAddress(&helpers.RequestAddressRequest{PoolID: h.pool})
					if err != nil {
						t.Error(err)
						return
					}
					addr := netip.MustParsePrefix(resp.Address).Addr()
					mu.Lock()
					if other, dup := seen[addr]; dup {
						t.Errorf("%s handed out twice (%s and %p)", addr, other, h)
					}
					seen[addr] = fmt.Sprintf("%p", h)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if _, dup := seen[netip.MustParseAddr("10.1.0.1")]; dup {
		t.Fatal("the gateway was handed out")
	}
	a.f.byPool[netip.MustParsePrefix("10.1.0.0/24")].prefetches.Wait()
	b.f.byPool[netip.MustParsePrefix("10.1.0.0/24")].prefetches.Wait()
}

// TestBlocksWithoutEtcd: with etcd down, addresses keep coming from the
// blocks already held, across a restart, and running out names the cause.
func TestBlocksWithoutEtcd(t *testing.T) {
	e := newFakeEtcd()
	dir := t.TempDir()
	a := newBlockHost(t, e, "ha", dir, map[string]string{OptBlockSize: "28"})
	a.alloc(t) // leases 10.1.0.0/28
	a.f.byPool[netip.MustParsePrefix("10.1.0.0/24")].prefetches.Wait()
	a.st.Close()
	e.mu.Lock()
	e.down = true
	held := len(e.blocks["10.1.0.0_24"])
	e.mu.Unlock()

	a = newBlockHost(t, e, "ha", dir, nil) // the restarted plugin
	free := held*16 - 2 - 1                // network address and gateway of block 0; one taken
	for i := range free {
		if _, err := a.d.RequestAddress(&helpers.RequestAddressRequest{PoolID: a.pool}); err != nil {
			t.Fatalf("allocation %d of %d with etcd down: %v", i+1, free, err)
		}
	}
	_, err := a.d.RequestAddress(&helpers.RequestAddressRequest{PoolID: a.pool})
	if err == nil || !errors.Is(err, errDown) || !strings.Contains(err.Error(), "10.1.0.0/24") {
		t.Fatalf("blocks full, etcd down: %v", err)
	}
}

// TestBlocksExhaustedAndReclaimed: when every block is leased the error
// names the holders; a dead host's block is taken over.
func TestBlocksExhaustedAndReclaimed(t *testing.T) {
	e := newFakeEtcd()
	opts := map[string]string{OptBlockSize: "25"}
	a := newBlockHost(t, e, "ha", t.TempDir(), opts)
	b := newBlockHost(t, e, "hb", t.TempDir(), opts)
	a.alloc(t)
	b.alloc(t)
	c := newBlockHost(t, e, "hc", t.TempDir(), opts)
	_, err := c.d.RequestAddress(&helpers.RequestAddressRequest{PoolID: c.pool})
	wantErr(t, err, ErrPoolExhausted, "hosts ha, hb")
	e.mu.Lock()
	e.dead["hb"] = true
	e.mu.Unlock()
	if got := c.alloc(t); !netip.MustParsePrefix("10.1.0.128/25").Contains(got) {
		t.Fatalf("c got %s, want an address of hb's block", got)
	}
}

// TestBlocksLocalPool: a pool that is not cross-host never asks etcd.
func TestBlocksLocalPool(t *testing.T) {
	e := newFakeEtcd()
	e.down = true
	a := newBlockHost(t, e, "ha", t.TempDir(), nil)
	a.cross = false
	if got := a.alloc(t); got != netip.MustParseAddr("10.1.0.2") {
		t.Fatalf("local pool: %s", got)
	}
	if e.calls != 0 {
		t.Fatalf("a local pool asked etcd %d times", e.calls)
	}
	if err := a.f.Prefetch(context.Background(), netip.MustParsePrefix("10.9.0.0/24")); err == nil || !strings.Contains(err.Error(), "--ipam-driver vxbridge") {
		t.Fatalf("prefetch of a foreign pool: %v", err)
	}
	if !a.f.Holds(netip.MustParsePrefix("10.1.0.0/24")) || a.f.Holds(netip.MustParsePrefix("10.9.0.0/24")) {
		t.Fatal("Holds")
	}
	if err := a.d.ReleasePool(&helpers.ReleasePoolRequest{PoolID: a.pool}); err != nil {
		t.Fatal(err)
	}
	if a.f.Holds(netip.MustParsePrefix("10.1.0.0/24")) {
		t.Fatal("Holds a released pool")
	}
}

// TestBlocksRoundRobin: a released address is not handed out again while
// the held blocks have other free addresses (a container on another host
// may still have its old MAC cached), and the cursor goes round the blocks.
func TestBlocksRoundRobin(t *testing.T) {
	e := newFakeEtcd()
	a := newBlockHost(t, e, "ha", t.TempDir(), nil) // /26 blocks
	first := a.alloc(t)                             // 10.1.0.2 (.1 is the gateway)
	if err := a.d.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: a.pool, Address: first.String()}); err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{}
	for range 40 {
		g := a.alloc(t)
		if g == first || seen[g] {
			t.Fatalf("%s handed out again while the block has free addresses", g)
		}
		seen[g] = true
	}
	a.f.byPool[netip.MustParsePrefix("10.1.0.0/24")].prefetches.Wait()
}

// TestBlocksWrap: once the cursor has passed the end of the held blocks
// (and no new block came in time), it starts over at their first free
// address.
func TestBlocksWrap(t *testing.T) {
	e := newFakeEtcd()
	a := newBlockHost(t, e, "ha", t.TempDir(), map[string]string{OptBlockSize: "29"})
	first := a.alloc(t) // 10.1.0.2, block 10.1.0.0/29
	e.mu.Lock()
	e.down = true // no second block
	e.mu.Unlock()
	if err := a.d.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: a.pool, Address: first.String()}); err != nil {
		t.Fatal(err)
	}
	var got []netip.Addr
	for range 6 {
		got = append(got, a.alloc(t))
	}
	if fmt.Sprint(got) != "[10.1.0.3 10.1.0.4 10.1.0.5 10.1.0.6 10.1.0.7 10.1.0.2]" {
		t.Fatalf("order %v", got)
	}
	a.f.byPool[netip.MustParsePrefix("10.1.0.0/24")].prefetches.Wait()
}

// TestReleaseBlocks: a deleted network's blocks go back to the cluster, so
// a subnet is not used up by hosts that once had the network.
func TestReleaseBlocks(t *testing.T) {
	e := newFakeEtcd()
	opts := map[string]string{OptBlockSize: "25"}
	a := newBlockHost(t, e, "ha", t.TempDir(), opts)
	b := newBlockHost(t, e, "hb", t.TempDir(), opts)
	got := a.alloc(t)
	bAddr := b.alloc(t)
	pfx := netip.MustParsePrefix("10.1.0.0/24")
	// A block with a container's address in it is kept.
	if err := a.f.ReleaseBlocks(context.Background(), pfx); err != nil {
		t.Fatal(err)
	}
	if meta, _ := a.st.Meta(blocksMetaKey(a.pool)); meta != "10.1.0.0/25" {
		t.Fatalf("block in use released: %q", meta)
	}
	if err := a.d.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: a.pool, Address: got.String()}); err != nil {
		t.Fatal(err)
	}
	if err := a.f.ReleaseBlocks(context.Background(), pfx); err != nil {
		t.Fatal(err)
	}
	if meta, _ := a.st.Meta(blocksMetaKey(a.pool)); meta != "" {
		t.Fatalf("released blocks still recorded locally: %q", meta)
	}
	c := newBlockHost(t, e, "hc", t.TempDir(), opts)
	if got := c.alloc(t); !netip.MustParsePrefix("10.1.0.0/25").Contains(got) {
		t.Fatalf("c got %s, want an address of the block a gave back", got)
	}
	// With etcd down the blocks stay held, locally and in etcd.
	e.mu.Lock()
	e.down = true
	e.mu.Unlock()
	if err := b.d.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: b.pool, Address: bAddr.String()}); err != nil {
		t.Fatal(err)
	}
	if err := b.f.ReleaseBlocks(context.Background(), pfx); !errors.Is(err, errDown) {
		t.Fatalf("release with etcd down: %v", err)
	}
	if meta, _ := b.st.Meta(blocksMetaKey(b.pool)); meta != "10.1.0.128/25" {
		t.Fatalf("unreleased block forgotten locally: %q", meta)
	}
	if err := a.f.ReleaseBlocks(context.Background(), netip.MustParsePrefix("10.9.0.0/24")); err != nil {
		t.Fatalf("unknown pool: %v", err)
	}
}

// A block is kept while a container's --ip address (KindStatic) lies in it,
// not only a dynamic one.
func TestReleaseBlocksKeepsStaticAddress(t *testing.T) {
	e := newFakeEtcd()
	a := newBlockHost(t, e, "ha", t.TempDir(), map[string]string{OptBlockSize: "25"})
	got := a.alloc(t)
	if err := a.d.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: a.pool, Address: got.String()}); err != nil {
		t.Fatal(err)
	}
	pfx := netip.MustParsePrefix("10.1.0.0/24")
	saveNetwork(t, a.st, "n1", pfx.String(), nil) // so --ip is told from an aux reservation
	static := requestAddr(t, a.d, a.pool, "10.1.0.77", nil)
	if got := kindOf(t, a.st, a.pool, "10.1.0.77"); got != store.KindStatic {
		t.Fatalf("10.1.0.77 stored as %q, want static", got)
	}
	if err := a.f.ReleaseBlocks(context.Background(), pfx); err != nil {
		t.Fatal(err)
	}
	if meta, _ := a.st.Meta(blocksMetaKey(a.pool)); meta != "10.1.0.0/25" {
		t.Fatalf("block with the static address %s released: %q", static, meta)
	}
}
