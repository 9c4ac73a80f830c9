package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vxbridge/vxbridge/store"
)

// Cross-host address blocks
//
// A cross-host network has one subnet on every host, so its addresses must
// be unique across hosts, yet a container start must not wait for etcd. Each
// host therefore leases blocks of the pool's range in etcd (a
// compare-and-swap per block, see cluster.ClaimBlock) and hands out
// addresses inside the blocks it holds from bbolt, like the local allocator.
// etcd is asked only when the host's blocks are full (and a background
// prefetch takes the next block before that happens), and once per network
// when it is created (Prefetch).
//
// A block is this host's while etcd says so, and etcd lets another host
// reclaim it once this host's lease has lapsed (a partition longer than the
// TTL) and its endpoint records went with it. So held blocks are confirmed
// in etcd whenever the lease changed, before another address comes from
// them, unless etcd does not answer: then the blocks of the state file are
// used, unconfirmed (the rule and why: blocks_recheck.go).
//
// Addresses asked for by value (the gateway, --aux-address, --ip) are not
// block-bound: the gateway and aux addresses are the same on every host by
// design, and every host reserves them, so no block hands them out.
// Keeping --ip addresses unique across hosts is the user's part.

// OptBlockSize is the --ipam-opt giving the prefix length of a pool's
// address blocks.
const OptBlockSize = "vxbridge.block_size"

// Default block sizes: 64 addresses per block in both families (the sizes
// Calico uses): small enough that a /24 serves 4 hosts with room to spare,
// large enough that etcd is asked once per 64 containers.
const (
	DefaultBlockBitsV4 = 26
	DefaultBlockBitsV6 = 122
)

// BlockLeaser is the cluster side of block allocation (cluster.Client).
type BlockLeaser interface {
	HostID() string
	// LeaseEpoch changes whenever the host's etcd lease is found gone or
	// a new one is taken.
	LeaseEpoch() uint64
	// InContact says, without asking etcd, whether etcd answered lately.
	InContact() bool
	// Unreachable says whether an error of HeldBlocks or ClaimBlock means
	// etcd did not answer (rather than answered with a refusal).
	Unreachable(err error) bool
	// HeldBlocks lists the blocks of pool and the host holding each; ""
	// for a block claimed once but held by no live host now (ClaimBlock
	// says whether it can be taken).
	HeldBlocks(ctx context.Context, pool string) (map[netip.Prefix]string, error)
	// ClaimBlock takes block for this host; false means another live host has it.
	ClaimBlock(ctx context.Context, pool string, block netip.Prefix) (bool, error)
	// ReleaseBlock gives a block of this host back.
	ReleaseBlock(ctx context.Context, pool string, block netip.Prefix) error
}

// BlockConfig configures NewBlockAllocators.
type BlockConfig struct {
	Store  Store
	Leaser BlockLeaser
	// CrossHost says whether dynamic addresses of the pool with prefix p
	// come from blocks (the pool is a cross-host network's subnet); other
	// pools allocate locally. It is asked on every allocation, so a pool
	// becomes cross-host when the network driver records its network.
	CrossHost func(p netip.Prefix) bool
	// Timeout bounds the etcd calls of one allocation; default 5 s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// BlockAllocators builds the Allocators of pools (its Factory goes into
// Options.NewAllocator) and can prefetch a block for a pool.
type BlockAllocators struct {
	cfg BlockConfig

	mu     sync.Mutex
	byPool map[netip.Prefix]*blockAllocator
}

// NewBlockAllocators returns the factory of block allocators.
func NewBlockAllocators(cfg BlockConfig) *BlockAllocators {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CrossHost == nil {
		cfg.CrossHost = func(netip.Prefix) bool { return true }
	}
	return &BlockAllocators{cfg: cfg, byPool: map[netip.Prefix]*blockAllocator{}}
}

// Factory is the AllocatorFactory for Options.NewAllocator.
func (f *BlockAllocators) Factory(p store.Pool, taken map[netip.Addr]store.AddressKind) (Allocator, error) {
	bits, err := BlockBits(p)
	if err != nil {
		return nil, err
	}
	local, err := NewLocalAllocator(f.cfg.Store, p, taken)
	if err != nil {
		return nil, err
	}
	b := &blockAllocator{localAllocator: local.(*localAllocator), f: f, rec: p, bits: bits, poolKey: blockPoolKey(p.Range)}
	if b.blocks, err = loadBlocks(f.cfg.Store, p.ID); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.byPool[p.Prefix] = b
	f.mu.Unlock()
	return b, nil
}

// Prefetch makes sure the pool with prefix holds a block with free
// addresses, asking etcd if not: the network driver calls it when a
// cross-host network is created, so the first container does not wait.
func (f *BlockAllocators) Prefetch(ctx context.Context, prefix netip.Prefix) error {
	f.mu.Lock()
	b := f.byPool[prefix]
	f.mu.Unlock()
	if b == nil {
		return fmt.Errorf("pool %s is not held by vxbridge's IPAM: create the network with --ipam-driver vxbridge", prefix)
	}
	return b.ensureFree(ctx, 1)
}

// inUse reports whether a container's address in blk is taken, dynamic or
// asked for with --ip (gateway and aux addresses are every host's and do not
// count).
func (b *blockAllocator) inUse(blk netip.Prefix) bool { return len(b.addressesIn(blk)) > 0 }

// ReleaseBlocks gives the blocks this host holds of the pool with prefix
// back to the cluster: the network driver calls it when the host's
// cross-host network is deleted, so other hosts can use them. Blocks it
// could not release stay this host's (and are used again if the network
// comes back).
func (f *BlockAllocators) ReleaseBlocks(ctx context.Context, prefix netip.Prefix) error {
	f.mu.Lock()
	b := f.byPool[prefix]
	f.mu.Unlock()
	if b == nil {
		return nil
	}
	b.bmu.Lock()
	defer b.bmu.Unlock()
	var keep []netip.Prefix
	var errs []error
	for _, blk := range b.blocks {
		if b.inUse(blk) {
			keep = append(keep, blk) // a container still has an address in it
			continue
		}
		if err := f.cfg.Leaser.ReleaseBlock(ctx, b.poolKey, blk); err != nil {
			keep = append(keep, blk)
			errs = append(errs, err)
		}
	}
	if err := b.setBlocks(keep); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Holds reports whether vxbridge's IPAM holds a pool with this prefix now
// (the store says; an allocator of a released pool does not count).
func (f *BlockAllocators) Holds(prefix netip.Prefix) bool {
	pools, err := f.cfg.Store.Pools()
	if err != nil {
		return false
	}
	for _, p := range pools {
		if p.Prefix == prefix {
			return true
		}
	}
	return false
}

// blockPoolKey names a pool's range in etcd: the same subnet on every host
// shares blocks, whatever the local pool id.
func blockPoolKey(rng netip.Prefix) string {
	return rng.Masked().Addr().String() + "_" + strconv.Itoa(rng.Bits())
}

// BlockBits is the block prefix length of p: its OptBlockSize option or the
// family default, never shorter than the range (a block is at most the
// whole range).
func BlockBits(p store.Pool) (int, error) {
	bits := DefaultBlockBitsV4
	maxBits := 30 // at least 4 addresses, 2 of them usable
	if p.V6 {
		bits, maxBits = DefaultBlockBitsV6, 126
	}
	if s, ok := p.Options[OptBlockSize]; ok {
		n, err := strconv.Atoi(strings.TrimPrefix(s, "/"))
		if err != nil || n < 1 || n > maxBits {
			return 0, errorf(ErrInvalid, "ipam option %s=%q: want a prefix length from 1 to %d", OptBlockSize, s, maxBits)
		}
		bits = n
	}
	return max(bits, p.Range.Bits()), nil
}

func blocksMetaKey(poolID string) string { return "ipam.blocks." + poolID }

func loadBlocks(st Store, poolID string) ([]netip.Prefix, error) {
	v, err := st.Meta(blocksMetaKey(poolID))
	if err != nil || v == "" {
		return nil, err
	}
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("stored address blocks of pool %s: %q: %w", poolID, s, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// blockAllocator is a localAllocator whose dynamic addresses, while its pool
// is cross-host, come only from the blocks this host holds.
type blockAllocator struct {
	*localAllocator
	f       *BlockAllocators
	rec     store.Pool
	bits    int
	poolKey string

	bmu        sync.Mutex // serialises block claims; taken before a.mu
	blocks     []netip.Prefix
	prefetches sync.WaitGroup

	// Whether blocks are confirmed in etcd under lease epoch; since when
	// and why they are in use unconfirmed (zero, nil: they are not); the
	// blocks other hosts took (blocks_recheck.go). bmu held.
	confirmed        bool
	epoch            uint64
	unconfirmedSince time.Time
	unconfirmedWhy   error
	lost             []lostBlock
}

func (b *blockAllocator) Allocate(want netip.Addr, kind store.AddressKind) (netip.Addr, error) {
	if want.IsValid() || !b.f.cfg.CrossHost(b.rec.Prefix) {
		return b.localAllocator.Allocate(want, kind)
	}
	b.bmu.Lock()
	defer b.bmu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), b.f.cfg.Timeout)
	defer cancel()
	if err := b.recheck(ctx); err != nil {
		return netip.Addr{}, err
	}
	if got, ok, err := b.takeInBlocks(kind); ok || err != nil {
		return got, err
	}
	if b.unconfirmedWhy != nil {
		return netip.Addr{}, fmt.Errorf("pool %s: this host's address blocks %v are full, and etcd, which leases new ones, does not answer: start the container once etcd is back: %w",
			b.rec.Prefix, b.blocks, b.unconfirmedWhy)
	}
	if err := b.claimBlock(ctx); err != nil {
		return netip.Addr{}, err
	}
	got, ok, err := b.takeInBlocks(kind)
	if !ok && err == nil {
		err = errorf(ErrPoolExhausted, "pool %s: no free address in this host's blocks %v%s", b.rec.Prefix, b.blocks, b.lostNote())
	}
	return got, err
}

// takeInBlocks hands out the first free address of the held blocks, and
// starts a background claim when little is left. bmu held.
func (b *blockAllocator) takeInBlocks(kind store.AddressKind) (netip.Addr, bool, error) {
	a := b.localAllocator
	a.mu.Lock()
	defer a.mu.Unlock()
	got, ok := b.nextFree()
	if !ok {
		return netip.Addr{}, false, nil
	}
	next := got.Next()
	if err := a.st.SaveAddress(a.poolID, got, kind, next); err != nil {
		return netip.Addr{}, false, err
	}
	a.mark(got, kind)
	a.next = next
	if b.freeInBlocks() < b.lowWater() {
		b.prefetches.Add(1)
		go func() {
			defer b.prefetches.Done()
			ctx, cancel := context.WithTimeout(context.Background(), b.f.cfg.Timeout)
			defer cancel()
			if err := b.ensureFree(ctx, b.lowWater()); err != nil {
				b.f.cfg.Logger.Warn("prefetch of an address block failed; the next allocation retries",
					"pool", b.rec.Prefix, "err", err)
			}
		}()
	}
	return got, true, nil
}

// lowWater is when the next block is fetched: a quarter of a block left.
func (b *blockAllocator) lowWater() uint64 {
	size := span(b.rec.Range.Masked().Addr(), lastAddr(netip.PrefixFrom(b.rec.Range.Addr(), b.bits)))
	return max(1, size/4)
}

// blockBounds is the dynamically usable part of blk. a.mu held or not needed.
func (b *blockAllocator) blockBounds(blk netip.Prefix) (first, last netip.Addr, ok bool) {
	a := b.localAllocator
	first, last = blk.Masked().Addr(), lastAddr(blk)
	if first.Compare(a.first) < 0 {
		first = a.first
	}
	if last.Compare(a.last) > 0 {
		last = a.last
	}
	return first, last, first.Compare(last) <= 0
}

// nextFree is the next free address of the held blocks after the cursor,
// round robin over all of them as the local allocator does over its range:
// a just released address is not handed out again at once, so the ARP
// caches of containers on other hosts do not send a new container's frames
// to the MAC of the one that had its address before. a.mu held.
func (b *blockAllocator) nextFree() (netip.Addr, bool) {
	a := b.localAllocator
	type span2 struct{ first, last netip.Addr }
	var spans []span2
	for _, blk := range b.blocks {
		if first, last, ok := b.blockBounds(blk); ok {
			spans = append(spans, span2{first, last})
		}
	}
	if len(spans) == 0 {
		return netip.Addr{}, false
	}
	slices.SortFunc(spans, func(x, y span2) int { return x.first.Compare(y.first) })
	k := slices.IndexFunc(spans, func(s span2) bool { return inBounds(a.next, s.first, s.last) })
	if k < 0 {
		// Cursor outside every block: start at the first block after it.
		k = max(0, slices.IndexFunc(spans, func(s span2) bool { return a.next.IsValid() && s.first.Compare(a.next) > 0 }))
	}
	taken := func(x netip.Addr) bool { _, t := a.taken[x]; return t }
	scan := func(first, last netip.Addr) (netip.Addr, bool) {
		return nextFree(first, last, first, min(span(first, last), uint64(len(a.taken))+1), taken)
	}
	// From the cursor to the end of its block, the other blocks in order,
	// then the start of the cursor's block.
	cur := spans[k]
	start := cur.first
	if inBounds(a.next, cur.first, cur.last) {
		start = a.next
	}
	if got, ok := scan(start, cur.last); ok {
		return got, true
	}
	for j := 1; j < len(spans); j++ {
		s := spans[(k+j)%len(spans)]
		if got, ok := scan(s.first, s.last); ok {
			return got, true
		}
	}
	if start != cur.first {
		return scan(cur.first, start.Prev())
	}
	return netip.Addr{}, false
}

// freeInBlocks counts free addresses of the held blocks. a.mu held.
func (b *blockAllocator) freeInBlocks() uint64 {
	a := b.localAllocator
	var free uint64
	for _, blk := range b.blocks {
		first, last, ok := b.blockBounds(blk)
		if !ok {
			continue
		}
		n := span(first, last)
		for addr := range a.taken {
			if inBounds(addr, first, last) {
				n--
			}
		}
		free += n
	}
	return free
}

// ensureFree claims blocks until at least want addresses are free.
func (b *blockAllocator) ensureFree(ctx context.Context, want uint64) error {
	b.bmu.Lock()
	defer b.bmu.Unlock()
	if err := b.recheck(ctx); err != nil {
		return err
	}
	b.localAllocator.mu.Lock()
	free := b.freeInBlocks()
	b.localAllocator.mu.Unlock()
	if free >= want || b.unconfirmedWhy != nil {
		return nil // enough, or etcd does not answer: the next allocation asks again
	}
	return b.claimBlock(ctx)
}

// errNoBlock: every block of the range is held by a live host.
var errNoBlock = errors.New("no free block")

// claimBlock adds one block to the held ones: first any block etcd says is
// already this host's (a claim whose local record a crash lost), else the
// first free block, else one of a departed host. bmu held.
func (b *blockAllocator) claimBlock(ctx context.Context) error {
	l := b.f.cfg.Leaser
	for attempt := 0; attempt < 8; attempt++ {
		held, err := l.HeldBlocks(ctx, b.poolKey)
		if err != nil {
			return fmt.Errorf("pool %s: this host's address blocks are full and a new one could not be leased: %w", b.rec.Prefix, err)
		}
		cand, err := b.candidate(held)
		if errors.Is(err, errNoBlock) {
			if cand, err = b.reclaimable(ctx, held); err != nil {
				return err
			}
		}
		if err != nil {
			return err
		}
		ok, err := l.ClaimBlock(ctx, b.poolKey, cand)
		if err != nil {
			return fmt.Errorf("pool %s: lease address block %s: %w", b.rec.Prefix, cand, err)
		}
		if !ok {
			continue // another host was faster: look again
		}
		return b.addBlock(cand)
	}
	return fmt.Errorf("pool %s: could not lease an address block: other hosts kept taking them", b.rec.Prefix)
}

// candidate picks the block to claim from what etcd says is held.
func (b *blockAllocator) candidate(held map[netip.Prefix]string) (netip.Prefix, error) {
	me := b.f.cfg.Leaser.HostID()
	used := make([]netip.Prefix, 0, len(held))
	for blk, host := range held {
		if host == me && !slices.Contains(b.blocks, blk) {
			return blk, nil
		}
		used = append(used, blk)
	}
	slices.SortFunc(used, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	if cand, ok := firstFreeSubnet(b.rec.Range.Masked(), b.bits, used); ok {
		return cand, nil
	}
	return netip.Prefix{}, errNoBlock
}

// reclaimable returns a block no live host holds (its holder is gone), if
// etcd lets this host have one. A block with a holder is not asked for: its
// holder is alive (its claim goes with its lease).
func (b *blockAllocator) reclaimable(ctx context.Context, held map[netip.Prefix]string) (netip.Prefix, error) {
	me := b.f.cfg.Leaser.HostID()
	var hosts []string
	for blk, host := range held {
		if host == me {
			continue
		}
		if host == "" {
			if ok, err := b.f.cfg.Leaser.ClaimBlock(ctx, b.poolKey, blk); err == nil && ok {
				return blk, nil
			}
			host = "(a host of an older vxbridge, or one back from a lapsed lease)"
		}
		if !slices.Contains(hosts, host) {
			hosts = append(hosts, host)
		}
	}
	slices.Sort(hosts)
	return netip.Prefix{}, errorf(ErrPoolExhausted, "pool %s is exhausted across hosts: every /%d block of %s is leased (by hosts %s)%s",
		b.rec.Prefix, b.bits, b.rec.Range, strings.Join(hosts, ", "), b.lostNote())
}

func (b *blockAllocator) addBlock(blk netip.Prefix) error {
	if slices.Contains(b.blocks, blk) {
		return nil
	}
	if err := b.setBlocks(append(slices.Clone(b.blocks), blk)); err != nil {
		return err
	}
	b.f.cfg.Logger.Info("address block leased", "pool", b.rec.Prefix, "block", blk, "blocks", len(b.blocks))
	return nil
}

// setBlocks records the held blocks on disk, then in memory. bmu held.
func (b *blockAllocator) setBlocks(blocks []netip.Prefix) error {
	strs := make([]string, len(blocks))
	for i, p := range blocks {
		strs[i] = p.String()
	}
	if err := b.f.cfg.Store.SetMeta(blocksMetaKey(b.rec.ID), strings.Join(strs, ",")); err != nil {
		return err
	}
	b.blocks = blocks
	return nil
}
