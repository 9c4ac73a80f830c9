package ipam

import (
	"maps"

	helpers "github.com/docker/go-plugins-helpers/ipam"
)

// Identical pool requests. The remote IPAM contract is that the same
// RequestPool gets the same answer, and docker relies on it after a crash:
// a plugin that died having stored a pool but before replying gets the
// request again from docker's retry once it is back. So an explicit pool
// asked for again, with the same range, family and options, is
// reference-counted instead of refused, and ReleasePool frees it at its
// last release. A pool that merely overlaps one in use is still refused.
// (Two vxbridge networks still cannot share a subnet: the network driver
// refuses the second.)

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
	if err := d.setRefs(p, p.refs+1); err != nil {
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
