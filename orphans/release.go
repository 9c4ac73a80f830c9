package orphans

import (
	"net/netip"

	helpers "github.com/docker/go-plugins-helpers/ipam"

	"github.com/vxbridge/vxbridge/store"
)

// AddressReleased is the IPAM's BeforeRelease hook: docker releasing addr
// of pool has given up the endpoint never joined that still claims it. This
// is how a CreateEndpoint whose reply a crash cut off ends: docker's retry
// fails (it sends an empty body), docker releases the address and never
// sends DeleteEndpoint for an endpoint it never saw created. The IPAM calls
// it before it frees the address, so no new endpoint can hold it yet.
func (c *Collector) AddressReleased(pool netip.Prefix, addr netip.Addr) {
	for _, id := range c.drv.EndpointsHolding(addr) {
		ep, err := c.records.Endpoint(id)
		if err != nil {
			c.log.Error("look at an endpoint claiming a released address", "endpoint", id, "address", addr, "err", err)
			continue
		}
		if ep == nil || ep.Joined {
			continue
		}
		n, err := c.records.Network(ep.NetworkID)
		if err != nil || n == nil || !onPool(n, pool, anySpace) {
			continue
		}
		gone, err := c.drv.DeleteEndpointIf(ep.ID, neverJoined)
		if err != nil {
			c.log.Error("delete endpoint whose address docker released", "endpoint", ep.ID, "address", addr, "err", err)
		} else if gone != nil {
			c.neverJoinedDeleted(gone)
		}
	}
}

// PoolReleased is the IPAM's PoolReleased hook: the IPAM of address space
// space just freed pool, so docker is done with the network on it.
// Normally DeleteNetwork came first and there is none; there is one when a
// CreateNetwork reply was cut off by a crash (docker's retry fails, docker
// releases the pool and never sends DeleteNetwork for a network it never
// saw created). Networks recorded without their address space (before it
// was stored) are left alone, and so are networks with endpoints.
func (c *Collector) PoolReleased(space string, pool netip.Prefix) {
	inSpace := func(s store.Subnet) bool { return s.AddressSpace != "" && s.AddressSpace == space }
	gone, err := c.drv.DeleteNetworksIf(func(n *store.Network) bool { return onPool(n, pool, inSpace) })
	if err != nil {
		c.log.Error("delete networks whose pool docker released", "pool", pool, "err", err)
	}
	for _, n := range gone {
		c.log.Warn("network deleted: docker released its pool without deleting it (a create whose reply a crash cut off)",
			"network", n.ID, "pool", pool)
	}
}

// onPool: a subnet of n that also passes space is pool.
func onPool(n *store.Network, pool netip.Prefix, space func(store.Subnet) bool) bool {
	for _, s := range n.Subnets() {
		if s.Pool.Masked() == pool.Masked() && space(s) {
			return true
		}
	}
	return false
}

func anySpace(store.Subnet) bool { return true }

// releaseEndpointAddrs frees a deleted endpoint's addresses in vxbridge's
// IPAM (those docker could not release itself), logging what it did. An
// address another endpoint record holds is left alone: docker released it
// already and handed it on.
func (c *Collector) releaseEndpointAddrs(ep store.Endpoint, pools []store.Pool, rel Releaser) {
	others, err := c.records.Endpoints()
	if err != nil {
		c.log.Error("list endpoints before freeing a deleted endpoint's addresses", "endpoint", ep.ID, "err", err)
		return
	}
	held := map[netip.Addr]bool{}
	for _, o := range others {
		held[o.IPv4.Addr()], held[o.IPv6.Addr()] = true, true
	}
	for _, pfx := range []netip.Prefix{ep.IPv4, ep.IPv6} {
		if !pfx.IsValid() || held[pfx.Addr()] {
			continue
		}
		for _, r := range endpointReleases(pools, pfx.Addr(), c.records.Addresses) {
			if err := rel.ReleaseAddress(&r); err != nil {
				c.log.Error("free address of deleted endpoint", "endpoint", ep.ID, "pool", r.PoolID, "address", r.Address, "err", err)
				continue
			}
			c.log.Info("freed address of deleted endpoint", "endpoint", ep.ID, "pool", r.PoolID, "address", r.Address)
		}
	}
}

// endpointReleases is the pure part: the releases that free addr, only in
// a vxbridge pool where it is taken as an endpoint address, dynamic or
// static (--ip) (a network on another IPAM driver has no such pool; a
// gateway or aux reservation stays).
func endpointReleases(pools []store.Pool, addr netip.Addr, taken func(poolID string) (map[netip.Addr]store.AddressKind, error)) []helpers.ReleaseAddressRequest {
	var out []helpers.ReleaseAddressRequest
	for _, p := range pools {
		if !p.Prefix.Contains(addr) {
			continue
		}
		t, err := taken(p.ID)
		if k := t[addr]; err != nil || (k != store.KindEndpoint && k != store.KindStatic) {
			continue
		}
		out = append(out, helpers.ReleaseAddressRequest{PoolID: p.ID, Address: addr.String()})
	}
	return out
}
