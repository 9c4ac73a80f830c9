package ipam

import (
	"net/netip"
	"sync"

	"github.com/vxbridge/vxbridge/store"
)

// Allocator owns the addresses of one pool: which are taken, and where the
// next dynamic allocation starts. The Driver keeps pools (validation,
// overlap, ids, the pool records) and asks the pool's Allocator for
// addresses, so how addresses are shared out can change without touching
// the docker-facing code. Today every pool has a localAllocator (bbolt, one
// host). The cross-host allocator planned next leases blocks of a pool from
// etcd and allocates inside the blocks it holds; it plugs in through
// Options.NewAllocator with the same two calls.
//
// Implementations must be safe for concurrent use: the Driver does not
// serialise address calls across or within pools.
type Allocator interface {
	// Allocate takes want, or, when want is the zero Addr, the next free
	// address of the pool's range (round robin, so a just released address
	// is not handed out again at once). want may be any usable address of
	// the pool, inside the range or not (docker's --ip and --aux-address).
	// A taken want is ErrAddressInUse, except a gateway asked for again as
	// a gateway, which is returned again so a replayed request is harmless.
	// The address is persisted before Allocate returns.
	Allocate(want netip.Addr, kind store.AddressKind) (netip.Addr, error)
	// Release frees addr. Releasing a free or foreign address succeeds.
	Release(addr netip.Addr) error
}

// AllocatorFactory builds the Allocator of a pool, both for a pool just
// requested (taken empty) and for each stored pool when New reloads it
// (taken holds its recorded addresses).
type AllocatorFactory func(p store.Pool, taken map[netip.Addr]store.AddressKind) (Allocator, error)

// localAllocator keeps the taken addresses of its pool in a map mirrored to
// the store: memory grows with what is allocated, not with the pool's size,
// so a /8 or a /64 costs nothing up front.
type localAllocator struct {
	st            Store
	poolID        string
	pool, rng     netip.Prefix
	pfirst, plast netip.Addr // usable addresses of the pool (gateway, --ip, aux)
	first, last   netip.Addr // usable addresses of the range (dynamic)

	mu      sync.Mutex
	next    netip.Addr // round-robin cursor
	taken   map[netip.Addr]store.AddressKind
	inRange uint64 // taken addresses within [first, last]
}

// NewLocalAllocator returns the bbolt-backed Allocator of pool p; taken is
// copied.
func NewLocalAllocator(st Store, p store.Pool, taken map[netip.Addr]store.AddressKind) (Allocator, error) {
	a := &localAllocator{
		st: st, poolID: p.ID, pool: p.Prefix, rng: p.Range,
		next:  p.Next,
		taken: make(map[netip.Addr]store.AddressKind, len(taken)),
	}
	a.pfirst, a.plast = usableBounds(p.Prefix)
	a.first, a.last = rangeBounds(p.Prefix, p.Range)
	for addr, kind := range taken {
		a.taken[addr] = kind
		if inBounds(addr, a.first, a.last) {
			a.inRange++
		}
	}
	return a, nil
}

func (a *localAllocator) Allocate(want netip.Addr, kind store.AddressKind) (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if want.IsValid() {
		return a.takeAddr(want, kind)
	}
	return a.takeNext(kind)
}

func (a *localAllocator) takeAddr(want netip.Addr, kind store.AddressKind) (netip.Addr, error) {
	if !a.pool.Contains(want) {
		return netip.Addr{}, errorf(ErrOutsidePool, "address %s is outside pool %s", want, a.pool)
	}
	if !inBounds(want, a.pfirst, a.plast) {
		return netip.Addr{}, errorf(ErrOutsidePool,
			"address %s is the network, broadcast or subnet-router address of pool %s: usable addresses are %s-%s",
			want, a.pool, a.pfirst, a.plast)
	}
	if held, ok := a.taken[want]; ok {
		if held == store.KindGateway && kind == store.KindGateway {
			return want, nil
		}
		return netip.Addr{}, errorf(ErrAddressInUse, "address %s is already in use in pool %s (%s)", want, a.pool, held)
	}
	if err := a.st.SaveAddress(a.poolID, want, kind, netip.Addr{}); err != nil {
		return netip.Addr{}, err
	}
	a.mark(want, kind)
	return want, nil
}

func (a *localAllocator) takeNext(kind store.AddressKind) (netip.Addr, error) {
	size := span(a.first, a.last)
	if a.inRange >= size {
		return netip.Addr{}, a.exhausted(size)
	}
	// Among inRange+1 addresses of the range at least one is free, so this
	// bound finds it and keeps the scan proportional to what is allocated.
	got, ok := nextFree(a.first, a.last, a.next, min(size, a.inRange+1), func(x netip.Addr) bool {
		_, taken := a.taken[x]
		return taken
	})
	if !ok {
		return netip.Addr{}, a.exhausted(size)
	}
	next := following(got, a.first, a.last)
	if err := a.st.SaveAddress(a.poolID, got, kind, next); err != nil {
		return netip.Addr{}, err
	}
	a.mark(got, kind)
	a.next = next
	return got, nil
}

func (a *localAllocator) exhausted(size uint64) error {
	where := "pool " + a.pool.String()
	if a.rng != a.pool {
		where += " (ip range " + a.rng.String() + ")"
	}
	return errorf(ErrPoolExhausted, "%s is exhausted: all %d addresses %s-%s are in use", where, size, a.first, a.last)
}

func (a *localAllocator) mark(addr netip.Addr, kind store.AddressKind) {
	a.taken[addr] = kind
	if inBounds(addr, a.first, a.last) {
		a.inRange++
	}
}

func (a *localAllocator) Release(addr netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.taken[addr]; !ok {
		return nil
	}
	if err := a.st.DeleteAddress(a.poolID, addr); err != nil {
		return err
	}
	delete(a.taken, addr)
	if inBounds(addr, a.first, a.last) {
		a.inRange--
	}
	return nil
}
