package orphans

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	helpers "github.com/docker/go-plugins-helpers/ipam"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/store"
)

// Lister lists the records orphans are judged on (package store's *DB).
type Lister interface {
	Networks() ([]store.Network, error)
	Network(id string) (*store.Network, error)
	Endpoints() ([]store.Endpoint, error)
	Endpoint(id string) (*store.Endpoint, error)
	Pools() ([]store.Pool, error)
	// Addresses lists a pool's taken addresses.
	Addresses(poolID string) (map[netip.Addr]store.AddressKind, error)
}

// Deleter deletes orphaned records and their kernel side (package
// driver's *Driver). Each delete reads the record again and asks orphan
// about it under the lock docker's calls on it hold, so a docker call that
// comes first wins.
type Deleter interface {
	// EndpointsHolding returns the ids of the endpoint records holding a.
	EndpointsHolding(a netip.Addr) []string
	// DeleteEndpointIf deletes endpoint id under its own lock; it returns
	// the deleted record, nil when there was none or orphan kept it.
	DeleteEndpointIf(id string, orphan func(*store.Endpoint) (bool, error)) (*store.Endpoint, error)
	// DeleteEndpointsIf is DeleteEndpointIf for each of ids, all under the
	// driver's exclusive lock.
	DeleteEndpointsIf(ids []string, orphan func(*store.Endpoint) (bool, error)) ([]store.Endpoint, error)
	// DeleteNetworksIf deletes, under the driver's exclusive lock, the
	// networks without endpoints that orphan says are orphans.
	DeleteNetworksIf(orphan func(*store.Network) bool) ([]store.Network, error)
}

// Releaser frees addresses and pools as docker would have (package ipam's
// *Driver, vxbridge's IPAM).
type Releaser interface {
	ReleaseAddress(*helpers.ReleaseAddressRequest) error
	ReleasePool(*helpers.ReleasePoolRequest) error
}

// Links looks up links in the plugin's own namespace (package bridge's
// *Manager), where docker gives back the container end of a veth.
type Links interface {
	Link(name string) (bridge.LinkInfo, bool, error)
}

// Config wires a Collector.
type Config struct {
	Records Lister
	Driver  Deleter
	Links   Links
	Logger  *slog.Logger
}

// Collector finds orphans and has them deleted and freed. Its methods are
// safe for concurrent use.
type Collector struct {
	records Lister
	drv     Deleter
	links   Links
	log     *slog.Logger
}

// New returns a collector; Run and CollectLeftWhileDown start it, the IPAM
// calls AddressReleased and PoolReleased.
func New(cfg Config) *Collector {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Collector{records: cfg.Records, drv: cfg.Driver, links: cfg.Links, log: log}
}

// Run collects, until ctx ends, the orphans judged over time (endpoints
// never joined, unheld endpoint addresses, empty pools), each once it has
// stayed one for grace, freeing addresses and pools through rel. A grace
// of 0 turns it off.
func (c *Collector) Run(ctx context.Context, rel Releaser, grace time.Duration) {
	if grace <= 0 {
		return
	}
	// Four looks per grace period: a candidate goes at most a quarter of
	// the grace late.
	every := min(max(grace/4, time.Second), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	var tr Tracker
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.pass(&tr, rel, grace); err != nil {
			c.log.Error("orphan collection pass", "err", err)
		}
	}
}

// pass lists the records once and collects what tr reports.
func (c *Collector) pass(tr *Tracker, rel Releaser, grace time.Duration) error {
	st, err := c.state()
	if err != nil {
		return err
	}
	found, err := tr.Pass(st, time.Now(), grace)
	if err != nil {
		return err
	}
	for _, ep := range found.NeverJoined {
		gone, err := c.drv.DeleteEndpointIf(ep.ID, neverJoined)
		if err != nil {
			c.log.Error("delete endpoint never joined", "endpoint", ep.ID, "err", err)
			continue
		}
		if gone != nil {
			c.neverJoinedDeleted(gone)
			c.releaseEndpointAddrs(*gone, st.Pools, rel)
		}
	}
	c.releasePools(found.Pools, rel, grace)
	c.releaseAddresses(found.Addresses, rel, grace)
	return nil
}

// state lists what a Tracker pass looks at.
func (c *Collector) state() (State, error) {
	st := State{Taken: c.records.Addresses}
	var err error
	if st.Networks, err = c.records.Networks(); err != nil {
		return State{}, err
	}
	if st.Endpoints, err = c.records.Endpoints(); err != nil {
		return State{}, err
	}
	if st.Pools, err = c.records.Pools(); err != nil {
		return State{}, err
	}
	return st, nil
}

func (c *Collector) releasePools(ids []string, rel Releaser, grace time.Duration) {
	for _, id := range ids {
		if err := rel.ReleasePool(&helpers.ReleasePoolRequest{PoolID: id}); err != nil {
			c.log.Error("free pool no network uses", "pool", id, "err", err)
			continue
		}
		c.log.Warn("freed a pool that stayed without any address for "+grace.String()+
			" (stored by a plugin that died before replying)", "pool", id)
	}
}

func (c *Collector) releaseAddresses(addrs []Address, rel Releaser, grace time.Duration) {
	for _, a := range addrs {
		if err := rel.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: a.PoolID, Address: a.Addr.String()}); err != nil {
			c.log.Error("free address no endpoint holds", "pool", a.PoolID, "address", a.Addr, "err", err)
			continue
		}
		c.log.Warn("freed an endpoint address no endpoint held for "+grace.String()+
			" (a reply a crash cut off, or a release vxbridge could not hear)", "pool", a.PoolID, "address", a.Addr)
	}
}

// neverJoined is the second look at an endpoint never joined, under its
// lock: a Join that came first keeps it.
func neverJoined(ep *store.Endpoint) (bool, error) { return !ep.Joined, nil }

func (c *Collector) neverJoinedDeleted(ep *store.Endpoint) {
	c.log.Warn("endpoint created but never joined: deleted (docker rolled it back while vxbridge could not hear it)",
		"network", short(ep.NetworkID), "endpoint", ep.ID)
}

// short is the 12-hex form docker shows of an id.
func short(id string) string { return id[:min(12, len(id))] }
