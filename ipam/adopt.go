package ipam

// Pools of adopted networks. When a state file is lost and start-up
// adopts the networks the kernel still shows (driver/adopt.go), their IPAM
// pools are lost with it, and which IPAM docker used for each is not in the
// kernel. Docker keeps the pool ids of the networks our IPAM served and asks
// for addresses of them: a pool id this IPAM does not hold, whose subnet an
// adopted network has, is made again then, with the addresses the records
// hold (the gateway, the endpoints') taken. A network docker's own IPAM
// serves is never asked for, and gets no pool here.

import (
	"net/netip"

	"github.com/vxbridge/vxbridge/store"
)

// AdoptedPool says whether an adopted network has subnet prefix, and which
// of its addresses the records hold: for Options.AdoptedPool.
type AdoptedPool func(prefix netip.Prefix) (gateways, endpoints []netip.Addr, ok bool)

// adoptPool makes the pool id names when it belongs to an adopted network;
// made is false when it does not (or the id does not decode).
func (d *Driver) adoptPool(id string) (made bool, err error) {
	if d.adopted == nil {
		return false, nil
	}
	space, prefix, rng, err := parsePoolID(id)
	if err != nil {
		return false, nil
	}
	gateways, endpoints, ok := d.adopted(prefix)
	if !ok {
		return false, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pools[id] != nil {
		return true, nil // made meanwhile
	}
	if err := d.checkOverlap(space, prefix); err != nil {
		return false, err
	}
	rec := store.Pool{ID: id, AddressSpace: space, Prefix: prefix, Range: rng, V6: prefix.Addr().Is6(), Refs: 1}
	rec.Next, _ = rangeBounds(prefix, rng)
	alloc, err := d.newAlloc(rec, nil)
	if err != nil {
		return false, err
	}
	if err := d.st.SavePool(&rec); err != nil {
		return false, err
	}
	d.pools[id] = &pool{rec: rec, alloc: alloc, refs: 1}
	for _, t := range []struct {
		addrs []netip.Addr
		kind  store.AddressKind
	}{{gateways, store.KindGateway}, {endpoints, store.KindEndpoint}} {
		for _, a := range t.addrs {
			if _, err := alloc.Allocate(a, t.kind); err != nil {
				d.log.Warn("adopted pool: address not taken", "pool_id", id, "address", a, "err", err)
			}
		}
	}
	d.log.Info("pool of an adopted network made again", "pool_id", id, "gateways", gateways, "endpoints", len(endpoints))
	return true, nil
}
