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
//     refused, as docker's built-in IPAM does: two networks on one subnet
//     would be two bridges with the same connected route. The identical
//     request (pool, range, family, options) is the exception: it gets the
//     same pool, reference-counted (refs.go), as the remote IPAM contract
//     asks and as docker's retry after a plugin crash needs. Pools without --subnet come from DefaultPool ranges,
//     skipping held pools of every space and host routes.
//   - Addresses come from a per-pool Allocator (allocator.go). The Driver
//     owns pools and talks docker; the Allocator owns which addresses are
//     taken. The local one keeps a map of taken addresses per pool and scans
//     round robin from a cursor, costing memory and time in proportion to
//     what is allocated, never to the pool's size (a /64 is fine). The
//     cross-host allocator (blocks leased from etcd) replaces it through
//     Options.NewAllocator.
//   - Address kinds (store.AddressKind): the gateway; dynamic endpoint
//     addresses; and specific addresses, which docker asks for the same way
//     (an address, no options) both for --aux-address reservations, during
//     network create, and for an endpoint's --ip, once the network exists.
//     They are told apart by that order: a specific address asked for on a
//     pool that a stored vxbridge network already uses (the network driver
//     saves it in CreateNetwork, after docker reserved the aux addresses) is
//     an endpoint's, KindStatic, unless the network lists it as an aux
//     address; before that it is KindAux. With a network driver other than
//     vxbridge's there is no such record and every specific address stays
//     KindAux. Records written before KindStatic existed hold --ip
//     addresses as aux: New rewrites each aux address a stored endpoint
//     holds as static; the rest mean "an --aux-address, or an --ip of an
//     endpoint the store does not know" (see migrateAux).
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

	"github.com/vxbridge/vxbridge/bridge"
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
	SetPoolRefs(id string, refs int) error
}

// networkRecords is the part of the store (package store's *store.DB) that
// holds the network driver's records. The Driver reads it, when its Store
// has it, to tell endpoint addresses from aux reservations (KindStatic vs
// KindAux); a Store without it stores every specific address as KindAux.
type networkRecords interface {
	Networks() ([]store.Network, error)
	Endpoints() ([]store.Endpoint, error)
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
	// HostRoutes lists the host's routes and addresses (bridge.Manager's
	// Routes): default pools overlapping one are skipped, explicit ones
	// refused (validate.go). nil: none are considered.
	HostRoutes func() ([]bridge.Route, error)
	// NewAllocator builds each pool's Allocator; nil means NewLocalAllocator
	// on the store.
	NewAllocator AllocatorFactory
	Logger       *slog.Logger
	// Crash is the test-only crash hook (see CrashPoints); nil in release
	// builds.
	Crash func(point string)
	// BeforeRelease, if set, is called with the pool's prefix and the
	// address before ReleaseAddress frees it, while nothing else can be
	// given it: docker releasing an address has given up whatever endpoint
	// still claims it (main wires orphans.Collector's AddressReleased).
	BeforeRelease func(pool netip.Prefix, addr netip.Addr)
	// PoolReleased, if set, is called after a pool's last release deleted
	// it, with its address space and prefix: docker releasing a pool is done
	// with the network on it (main wires orphans.Collector's PoolReleased,
	// for a network create whose reply a crash cut off).
	PoolReleased func(space string, pool netip.Prefix)
	// AdoptedPool, if set, tells an adopted network's subnet (adopt.go):
	// its pool is made again when docker first asks for an address of it.
	AdoptedPool AdoptedPool
}

// Driver implements helpers.Ipam.
type Driver struct {
	st         Store
	local      string
	global     string
	defaultsV4 []DefaultPool
	defaultsV6 []DefaultPool
	hostRoutes func() ([]bridge.Route, error)
	newAlloc   AllocatorFactory
	log        *slog.Logger
	crashHook  func(point string)
	beforeRel  func(pool netip.Prefix, addr netip.Addr)
	poolGone   func(space string, pool netip.Prefix)
	adopted    AdoptedPool

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
	refs     int // RequestPools holding it; d.mu guards
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
		crashHook:  opts.Crash,
		beforeRel:  opts.BeforeRelease,
		poolGone:   opts.PoolReleased,
		adopted:    opts.AdoptedPool,
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
	held := d.endpointAddrs()
	for _, rec := range recs {
		if err := checkRecord(rec); err != nil {
			return err
		}
		taken, err := d.st.Addresses(rec.ID)
		if err != nil {
			return fmt.Errorf("load addresses of pool %s: %w", rec.ID, err)
		}
		d.migrateAux(rec, taken, held[rec.Prefix.Masked()])
		alloc, err := d.newAlloc(rec, taken)
		if err != nil {
			return fmt.Errorf("allocator of pool %s: %w", rec.ID, err)
		}
		d.pools[rec.ID] = &pool{rec: rec, alloc: alloc, refs: max(rec.Refs, 1)}
		d.log.Debug("pool loaded", "pool_id", rec.ID, "addresses", len(taken))
	}
	d.log.Info("ipam state loaded", "pools", len(recs))
	return nil
}

// endpointAddrs is, by pool prefix, the addresses the stored endpoints of
// vxbridge networks using that pool hold (nil when the store has no network
// records or cannot list them: nothing is migrated then).
func (d *Driver) endpointAddrs() map[netip.Prefix]map[netip.Addr]bool {
	nr, ok := d.st.(networkRecords)
	if !ok {
		return nil
	}
	nets, err := nr.Networks()
	if err != nil {
		d.log.Warn("list networks to classify stored aux addresses; they stay aux", "err", err)
		return nil
	}
	eps, err := nr.Endpoints()
	if err != nil {
		d.log.Warn("list endpoints to classify stored aux addresses; they stay aux", "err", err)
		return nil
	}
	byID := make(map[string]store.Network, len(nets))
	for _, n := range nets {
		byID[n.ID] = n
	}
	out := map[netip.Prefix]map[netip.Addr]bool{}
	for _, ep := range eps {
		n, ok := byID[ep.NetworkID]
		if !ok {
			continue
		}
		for _, a := range []netip.Prefix{ep.IPv4, ep.IPv6} {
			if !a.IsValid() {
				continue
			}
			for _, s := range n.Subnets() {
				if s.Pool.Contains(a.Addr()) {
					k := s.Pool.Masked()
					if out[k] == nil {
						out[k] = map[netip.Addr]bool{}
					}
					out[k][a.Addr()] = true
				}
			}
		}
	}
	return out
}

// migrateAux rewrites, in taken and in the store, the aux addresses of pool
// rec that a stored endpoint holds as KindStatic: before KindStatic existed
// an endpoint's --ip was stored as aux. An aux reservation cannot be an
// endpoint's address (it is taken), so the rewrite never turns a real
// --aux-address into a static one. What stays aux is an --aux-address, or
// an --ip address of an endpoint the store does not hold (one docker
// created but the plugin never recorded): both are only reservations. A
// failed rewrite is logged and the address stays aux; allocation treats
// both kinds alike.
func (d *Driver) migrateAux(rec store.Pool, taken map[netip.Addr]store.AddressKind, held map[netip.Addr]bool) {
	for _, a := range slices.SortedFunc(maps.Keys(taken), netip.Addr.Compare) {
		if taken[a] != store.KindAux || !held[a] {
			continue
		}
		if err := d.st.SaveAddress(rec.ID, a, store.KindStatic, netip.Addr{}); err != nil {
			d.log.Warn("rewrite stored aux address of an endpoint as static; it stays aux", "pool_id", rec.ID, "address", a, "err", err)
			continue
		}
		taken[a] = store.KindStatic
		d.log.Info("stored aux address of an endpoint rewritten as static", "pool_id", rec.ID, "address", a)
	}
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
	if resp, err := d.requestAgain(space, req); resp != nil || err != nil {
		return resp, err
	}
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
	d.pools[rec.ID] = &pool{rec: rec, alloc: alloc, refs: 1}
	d.crash(CrashPoolSaved)
	d.log.Info("pool requested", "pool_id", rec.ID, "default", req.Pool == "")
	return &helpers.RequestPoolResponse{PoolID: rec.ID, Pool: prefix.String(), Data: map[string]string{}}, nil
}

// choosePool validates an explicit pool or picks a default one. d.mu held.
func (d *Driver) choosePool(space string, req *helpers.RequestPoolRequest) (prefix, rng netip.Prefix, err error) {
	if req.Pool == "" && req.SubPool != "" {
		return prefix, rng, errorf(ErrInvalid, "ip range %q given without a subnet: give the network a --subnet containing it", req.SubPool)
	}
	var routes []bridge.Route
	if d.hostRoutes != nil {
		if routes, err = d.hostRoutes(); err != nil {
			return prefix, rng, fmt.Errorf("list the host's routes and addresses for the pool: %w", err)
		}
	}
	if req.Pool != "" {
		if prefix, rng, err = parsePool(req.Pool, req.SubPool, req.V6); err != nil {
			return prefix, rng, err
		}
		if err := CheckSubnet(prefix); err != nil {
			return prefix, rng, err
		}
		if err := d.checkOverlap(space, prefix); err != nil {
			return prefix, rng, err
		}
		return prefix, rng, CheckRoutes(prefix, routes, nil)
	}
	held := make([]netip.Prefix, 0, len(d.pools))
	for _, p := range d.sortedPools() {
		held = append(held, p.rec.Prefix)
	}
	defaults := d.defaultsV4
	if req.V6 {
		defaults = d.defaultsV6
	}
	prefix, err = pickDefault(defaults, req.V6, held, routePrefixes(routes))
	return prefix, prefix, err
}

func routePrefixes(routes []bridge.Route) []netip.Prefix {
	out := make([]netip.Prefix, len(routes))
	for i, r := range routes {
		out[i] = r.Prefix
	}
	return out
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
	if p.refs > 1 {
		return d.setRefs(p, p.refs-1)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := d.st.DeletePool(req.PoolID); err != nil {
		return err
	}
	p.released = true
	delete(d.pools, req.PoolID)
	if d.poolGone != nil {
		d.poolGone(p.rec.AddressSpace, p.rec.Prefix)
	}
	d.crash(CrashPoolReleased)
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
	if d.pool(req.PoolID) == nil {
		if _, err := d.adoptPool(req.PoolID); err != nil {
			return nil, err
		}
	}
	var got netip.Prefix
	found, err := d.withPool(req.PoolID, func(p *pool) error {
		want, kind, err := addressWanted(p.rec.Prefix, req)
		if err != nil {
			return err
		}
		if kind == store.KindAux {
			kind = d.specificKind(p.rec.Prefix, want)
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
	d.crash(CrashAddressSaved)
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

// specificKind classifies a specific address asked for without the gateway
// marker: KindStatic when a stored vxbridge network already uses pool (an
// endpoint's --ip: docker asks for aux reservations before the network
// driver stores the network) and does not list addr as an aux address;
// KindAux otherwise. A store that cannot say gives KindAux, the kind such
// addresses always had.
func (d *Driver) specificKind(pool netip.Prefix, addr netip.Addr) store.AddressKind {
	nr, ok := d.st.(networkRecords)
	if !ok {
		return store.KindAux
	}
	nets, err := nr.Networks()
	if err != nil {
		d.log.Warn("list networks to classify a specific address; stored as aux", "pool", pool, "address", addr, "err", err)
		return store.KindAux
	}
	for _, n := range nets {
		for _, s := range n.Subnets() {
			if s.Pool.Masked() != pool.Masked() {
				continue
			}
			for _, aux := range s.Aux {
				if aux == addr {
					return store.KindAux
				}
			}
			return store.KindStatic
		}
	}
	return store.KindAux
}

// ReleaseAddress implements helpers.Ipam. Unknown pools and free addresses
// succeed; the address may be bare or in CIDR form.
func (d *Driver) ReleaseAddress(req *helpers.ReleaseAddressRequest) error {
	found, err := d.withPool(req.PoolID, func(p *pool) error {
		addr, err := parseAddr(req.Address)
		if err != nil {
			return fmt.Errorf("pool %s: %w", p.rec.Prefix, err)
		}
		if d.beforeRel != nil {
			d.beforeRel(p.rec.Prefix, addr)
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
	if err == nil {
		d.crash(CrashAddressReleased)
	}
	return err
}
