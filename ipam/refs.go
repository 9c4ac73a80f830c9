package ipam

import (
	"maps"

	helpers "github.com/docker/go-plugins-helpers/ipam"
)

// Identical pool requests. The remote IPAM contract is that the same
// RequestPool gets the same answer: an explicit pool asked for again, with
// the same range, family and options, is reference-counted instead of
// refused, and ReleasePool frees it at its last release. A pool that merely
// overlaps one in use is still refused. (Two vxbridge networks still cannot
// share a subnet: the network driver refuses the second.)
//
// After a crash: a plugin that died having stored a pool, before replying,
// does not get the request again (docker's retry of a call the plugin
// received carries an empty body, and fails), so docker never learns the
// pool's id. Such a pool has no address at all: docker asks for the gateway
// right after every RequestPool. The user's identical retry adopts it
// without a new reference, so the network's removal frees it; the orphan
// collector (package orphans) releases one nobody asks for again.

// requestAgain answers a RequestPool for a pool already held, counting one
// more reference; (nil, nil) when req asks for anything else. d.mu held.
func (d *Driver) requestAgain(space string, req *helpers.RequestPoolRequest) (*helpers.RequestPoolResponse, error) {
	if req.Pool == "" {
		return nil, nil // a default pool is a new pool each time
	}
	prefix, rng, err := parsePool(req.Pool, req.SubPool, req.V6)
	if err != nil {
		return nil, nil // choosePool reports it
	}
	p := d.pools[formatPoolID(space, prefix, rng)]
	if p == nil || p.rec.V6 != req.V6 || !maps.Equal(p.rec.Options, req.Options) {
		return nil, nil
	}
	taken, err := d.st.Addresses(p.rec.ID)
	if err != nil {
		return nil, err
	}
	if len(taken) == 0 {
		// Nobody got as far as the gateway: whoever asked first gave up.
		d.log.Warn("pool asked for again before any address was taken from it: adopting it (a create whose reply a crash cut off?)",
			"pool_id", p.rec.ID)
	} else if err := d.setRefs(p, p.refs+1); err != nil {
		return nil, err
	}
	return &helpers.RequestPoolResponse{PoolID: p.rec.ID, Pool: p.rec.Prefix.String(), Data: map[string]string{}}, nil
}

// setRefs stores and applies p's new reference count. d.mu held.
func (d *Driver) setRefs(p *pool, refs int) error {
	if err := d.st.SetPoolRefs(p.rec.ID, refs); err != nil {
		return err
	}
	p.refs = refs
	d.log.Info("pool reference count", "pool_id", p.rec.ID, "refs", refs)
	return nil
}
