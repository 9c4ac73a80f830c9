// Package ipam is vxbridge's IPAM driver: the pools and addresses docker
// asks for through the IpamDriver plugin API.
//
// Design notes
//
//   - Docker drives everything. `network create` sends RequestPool, then
//     RequestAddress with the gateway marker (we return no gateway in
//     RequestPool's Data, so docker always asks), then one RequestAddress per
//     --aux-address; containers get RequestAddress with or without --ip.
//     Docker does not replay these on restart (RequiresRequestReplay is
//     false), so every reply is persisted in the store before it is sent and
//     New reloads the lot.
//   - A pool id is "<space>/<pool>[/<ip range>]" (poolid.go): readable in
//     `docker network inspect` and decodable without the store.
//   - An explicit pool that overlaps a pool held in the same address space is
//     refused, the identical one included, as docker's built-in IPAM does:
//     two networks on one subnet would be two bridges with the same
//     connected route. Pools without --subnet come from DefaultPool ranges,
//     skipping held pools of every space and host routes.
//   - Addresses come from a per-pool Allocator (allocator.go). The Driver
//     owns pools and talks docker; the Allocator owns which addresses are
//     taken. The local one keeps a map of taken addresses per pool and scans
//     round robin from a cursor, costing memory and time in proportion to
//     what is allocated, never to the pool's size (a /64 is fine). The
//     cross-host allocator (blocks leased from etcd) replaces it through
//     Options.NewAllocator.
//   - Concurrency: d.mu guards the pool map and pool create/release; each
//     Allocator serialises its own pool, so concurrent RequestAddress calls
//     on one pool never return the same address and different pools do not
//     wait on each other.
package ipam

import (
	"cmp"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"

	helpers "github.com/docker/go-plugins-helpers/ipam"

	"github.com/vxbridge/vxbridge/store"
)

// Docker's RequestAddress option marking the gateway request.
const (
	optRequestAddressType = "RequestAddressType"
	gatewayAddressType    = "com.docker.network.gateway"
)

// Default address space names.
const (
	DefaultLocalAddressSpace  = "vxbridge-local"
	DefaultGlobalAddressSpace = "vxbridge-global"
)

// Store is the persistence the driver needs (package store's *store.DB).
type Store interface {
	Pools() ([]store.Pool, error)
	SavePool(p *store.Pool) error
	DeletePool(id string) error
	SaveAddress(poolID string, addr netip.Addr, kind store.AddressKind, next netip.Addr) error
	DeleteAddress(poolID string, addr netip.Addr) error
	Addresses(poolID string) (map[netip.Addr]store.AddressKind, error)
	Meta(key string) (string, error)
	SetMeta(key, value string) error
}

// Options configure New. The zero value is usable.
type Options struct {
	LocalAddressSpace  string // default DefaultLocalAddressSpace
	GlobalAddressSpace string // default DefaultGlobalAddressSpace
	// DefaultPoolsV4 feeds networks created without an IPv4 --subnet;
	// nil means DefaultPoolV4 (10.212.0.0/14 in /24s).
	DefaultPoolsV4 []DefaultPool
	// DefaultPoolsV6 feeds networks created without an IPv6 --subnet; nil
	// means /64s of this host's ULA /48 (random, kept in the store).
	DefaultPoolsV6 []DefaultPool
	// HostRoutes lists the host's routes; default pools overlapping one are
	// skipped. nil: no routes are considered.
	HostRoutes func() ([]netip.Prefix, error)
	// NewAllocator builds each pool's Allocator; nil means NewLocalAllocator
	// on the store.
	NewAllocator AllocatorFactory
	Logger       *slog.Logger
}

// Driver implements helpers.Ipam.
type Driver struct {
	st         Store
	local      string
	global     string
	defaultsV4 []DefaultPool
	defaultsV6 []DefaultPool
	hostRoutes func() ([]netip.Prefix, error)
	newAlloc   AllocatorFactory
	log        *slog.Logger

	mu    sync.Mutex
	pools map[string]*pool // by pool id
}

type pool struct {
	rec   store.Pool
	alloc Allocator

	// Address calls hold mu for reading; ReleasePool takes it for writing
	// and marks the pool released, so no allocation lands in a pool after
	// its records are gone (or in a new pool that reuses its id).
	mu       sync.RWMutex
	released bool
}

var _ helpers.Ipam = (*Driver)(nil)

// New returns a Driver holding every pool and address of st.
func New(st Store, opts Options) (*Driver, error) {
	d := &Driver{
		st:         st,
		local:      cmp.Or(opts.LocalAddressSpace, DefaultLocalAddressSpace),
		global:     cmp.Or(opts.GlobalAddressSpace, DefaultGlobalAddressSpace),
		defaultsV4: opts.DefaultPoolsV4,
		defaultsV6: opts.DefaultPoolsV6,
		hostRoutes: opts.HostRoutes,
		newAlloc:   opts.NewAllocator,
		log:        opts.Logger,
		pools:      map[string]*pool{},
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.newAlloc == nil {
		d.newAlloc = func(p store.Pool, taken map[netip.Addr]store.AddressKind) (Allocator, error) {
			return NewLocalAllocator(st, p, taken)
		}
	}
	if err := d.setDefaults(); err != nil {
		return nil, err
	}
	if err := d.load(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Driver) setDefaults() error {
	if err := validateSpace("local", d.local); err != nil {
		return err
	}
	if err := validateSpace("global", d.global); err != nil {
		return err
	}
	if d.local == d.global {
		return errorf(ErrInvalid, "local and global address spaces are both %q", d.local)
	}
	if d.defaultsV4 == nil {
		d.defaultsV4 = []DefaultPool{DefaultPoolV4}
	}
	if d.defaultsV6 == nil {
		ula, err := ulaPrefix(d.st)
		if err != nil {
			return err
		}
		d.defaultsV6 = []DefaultPool{{Base: ula, Size: defaultV6Size}}
	}
	if err := validateDefaultPools(d.defaultsV4, false); err != nil {
		return err
	}
	return validateDefaultPools(d.defaultsV6, true)
}

// load rebuilds the in-memory pools and their allocators from the store.
func (d *Driver) load() error {
	recs, err := d.st.Pools()
	if err != nil {
		return fmt.Errorf("load pools: %w", err)
	}
	for _, rec := range recs {
		if err := checkRecord(rec); err != nil {
			return err
		}
		taken, err := d.st.Addresses(rec.ID)
		if err != nil {
			return fmt.Errorf("load addresses of pool %s: %w", rec.ID, err)
		}
		alloc, err := d.newAlloc(rec, taken)
		if err != nil {
			return fmt.Errorf("allocator of pool %s: %w", rec.ID, err)
		}
		d.pools[rec.ID] = &pool{rec: rec, alloc: alloc}
		d.log.Debug("pool loaded", "pool_id", rec.ID, "addresses", len(taken))
	}
	d.log.Info("ipam state loaded", "pools", len(recs))
	return nil
}

// checkRecord refuses a stored pool whose id does not say what it holds.
func checkRecord(rec store.Pool) error {
	space, prefix, rng, err := parsePoolID(rec.ID)
	if err != nil {
		return fmt.Errorf("stored pool: %w", err)
	}
	if space != rec.AddressSpace || prefix != rec.Prefix || rng != rec.Range || prefix.Addr().Is6() != rec.V6 {
		return fmt.Errorf("stored pool %s does not match its record (space %q, pool %s, range %s, v6 %t)",
			rec.ID, rec.AddressSpace, rec.Prefix, rec.Range, rec.V6)
	}
	return nil
}

// GetCapabilities implements helpers.Ipam.
func (d *Driver) GetCapabilities() (*helpers.CapabilitiesResponse, error) {
	return &helpers.CapabilitiesResponse{RequiresMACAddress: false}, nil
}

// GetDefaultAddressSpaces implements helpers.Ipam.
func (d *Driver) GetDefaultAddressSpaces() (*helpers.AddressSpacesResponse, error) {
	return &helpers.AddressSpacesResponse{LocalDefaultAddressSpace: d.local, GlobalDefaultAddressSpace: d.global}, nil
}

func (d *Driver) addressSpace(name string) (string, error) {
	switch name {
	case "":
		return d.local, nil
	case d.local, d.global:
		return name, nil
	}
	return "", errorf(ErrInvalid, "unknown address space %q: vxbridge serves %q and %q", name, d.local, d.global)
}

// RequestPool implements helpers.Ipam.
func (d *Driver) RequestPool(req *helpers.RequestPoolRequest) (*helpers.RequestPoolResponse, error) {
	space, err := d.addressSpace(req.AddressSpace)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	prefix, rng, err := d.choosePool(space, req)
	if err != nil {
		return nil, err
	}
	rec := store.Pool{
		ID:           formatPoolID(space, prefix, rng),
		AddressSpace: space,
		Prefix:       prefix,
		Range:        rng,
		V6:           req.V6,
		Options:      maps.Clone(req.Options),
	}
	rec.Next, _ = rangeBounds(prefix, rng)
	alloc, err := d.newAlloc(rec, nil)
	if err != nil {
		return nil, fmt.Errorf("allocator of pool %s: %w", rec.ID, err)
	}
	if err := d.st.SavePool(&rec); err != nil {
		return nil, err
	}
	d.pools[rec.ID] = &pool{rec: rec, alloc: alloc}
	d.log.Info("pool requested", "pool_id", rec.ID, "default", req.Pool == "")
	return &helpers.RequestPoolResponse{PoolID: rec.ID, Pool: prefix.String(), Data: map[string]string{}}, nil
}

// choosePool validates an explicit pool or picks a default one. d.mu held.
func (d *Driver) choosePool(space string, req *helpers.RequestPoolRequest) (prefix, rng netip.Prefix, err error) {
	if req.Pool != "" {
		if prefix, rng, err = parsePool(req.Pool, req.SubPool, req.V6); err != nil {
			return prefix, rng, err
		}
		return prefix, rng, d.checkOverlap(space, prefix)
	}
	if req.SubPool != "" {
		return prefix, rng, errorf(ErrInvalid, "ip range %q given without a subnet: give the network a --subnet containing it", req.SubPool)
	}
	var routes []netip.Prefix
	if d.hostRoutes != nil {
		if routes, err = d.hostRoutes(); err != nil {
			return prefix, rng, fmt.Errorf("list host routes to choose a default pool: %w", err)
		}
	}
	held := make([]netip.Prefix, 0, len(d.pools))
	for _, p := range d.sortedPools() {
		held = append(held, p.rec.Prefix)
	}
	defaults := d.defaultsV4
	if req.V6 {
		defaults = d.defaultsV6
	}
	prefix, err = pickDefault(defaults, req.V6, held, routes)
	return prefix, prefix, err
}

// checkOverlap refuses prefix when it overlaps a pool of space. d.mu held.
func (d *Driver) checkOverlap(space string, prefix netip.Prefix) error {
	for _, p := range d.sortedPools() {
		if p.rec.AddressSpace == space && p.rec.Prefix.Overlaps(prefix) {
			return errorf(ErrPoolOverlap, "pool %s overlaps pool %s already in use (pool id %s)", prefix, p.rec.Prefix, p.rec.ID)
		}
	}
	return nil
}

// sortedPools returns the held pools by id, so errors and choices do not
// depend on map order. d.mu held.
func (d *Driver) sortedPools() []*pool {
	out := slices.Collect(maps.Values(d.pools))
	slices.SortFunc(out, func(a, b *pool) int { return cmp.Compare(a.rec.ID, b.rec.ID) })
	return out
}

// ReleasePool implements helpers.Ipam. An unknown id succeeds: docker
// releases pools at start-up that this driver may never have held.
func (d *Driver) ReleasePool(req *helpers.ReleasePoolRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.pools[req.PoolID]
	if !ok {
		d.log.Debug("release of unknown pool", "pool_id", req.PoolID)
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := d.st.DeletePool(req.PoolID); err != nil {
		return err
	}
	p.released = true
	delete(d.pools, req.PoolID)
	d.log.Info("pool released", "pool_id", req.PoolID)
	return nil
}

func (d *Driver) pool(id string) *pool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pools[id]
}

// withPool runs fn on the pool with id under its read lock; found is false
// when the pool is not held (or was released meanwhile).
func (d *Driver) withPool(id string, fn func(p *pool) error) (found bool, err error) {
	p := d.pool(id)
	if p == nil {
		return false, nil
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.released {
		return false, nil
	}
	return true, fn(p)
}

// RequestAddress implements helpers.Ipam. The reply is the address with the
// pool's prefix length ("10.1.0.5/24"), as docker expects.
func (d *Driver) RequestAddress(req *helpers.RequestAddressRequest) (*helpers.RequestAddressResponse, error) {
	var got netip.Prefix
	found, err := d.withPool(req.PoolID, func(p *pool) error {
		want, kind, err := addressWanted(p.rec.Prefix, req)
		if err != nil {
			return err
		}
		a, err := p.alloc.Allocate(want, kind)
		if err != nil {
			return err
		}
		got = netip.PrefixFrom(a, p.rec.Prefix.Bits())
		d.log.Debug("address requested", "pool_id", p.rec.ID, "address", a, "kind", kind)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, errorf(ErrUnknownPool, "unknown pool id %q: no such pool is held by vxbridge", req.PoolID)
	}
	return &helpers.RequestAddressResponse{Address: got.String(), Data: map[string]string{}}, nil
}

// addressWanted decodes a RequestAddress: the address asked for (zero for
// any) and why it is taken.
func addressWanted(pool netip.Prefix, req *helpers.RequestAddressRequest) (netip.Addr, store.AddressKind, error) {
	var want netip.Addr
	if req.Address != "" {
		a, err := parseAddr(req.Address)
		if err != nil {
			return want, "", fmt.Errorf("pool %s: %w", pool, err)
		}
		want = a
	}
	switch {
	case req.Options[optRequestAddressType] == gatewayAddressType:
		if !want.IsValid() {
			want, _ = usableBounds(pool) // docker's IPAM gives the first usable address
		}
		return want, store.KindGateway, nil
	case want.IsValid():
		return want, store.KindAux, nil
	}
	return want, store.KindEndpoint, nil
}

// ReleaseAddress implements helpers.Ipam. Unknown pools and free addresses
// succeed; the address may be bare or in CIDR form.
func (d *Driver) ReleaseAddress(req *helpers.ReleaseAddressRequest) error {
	found, err := d.withPool(req.PoolID, func(p *pool) error {
		addr, err := parseAddr(req.Address)
		if err != nil {
			return fmt.Errorf("pool %s: %w", p.rec.Prefix, err)
		}
		if err := p.alloc.Release(addr); err != nil {
			return err
		}
		d.log.Debug("address released", "pool_id", p.rec.ID, "address", addr)
		return nil
	})
	if !found {
		d.log.Debug("release of address in unknown pool", "pool_id", req.PoolID, "address", req.Address)
	}
	return err
}
