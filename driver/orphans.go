package driver

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vxbridge/vxbridge/store"
)

// Deleting orphans: records (and their kernel side) that docker left
// allocated for nobody. Package orphans decides what is one; these are the
// deletes it calls. Each reads the record again and asks orphan about it
// under the lock docker's calls on that record hold, then deletes it under
// the same lock, so a call that comes first (a Join, docker's own
// DeleteEndpoint) keeps or removes the record before the judgement is made.

// EndpointsHolding returns the ids of the endpoint records holding address
// a, from an index the driver keeps as it writes them: cheap enough to ask
// on every ReleaseAddress.
func (d *Driver) EndpointsHolding(a netip.Addr) []string { return d.addrs.holders(a) }

// DeleteEndpointIf deletes endpoint id if its record exists and orphan says
// so, both under the endpoint's lock (as docker's calls on it), and returns
// the deleted record: nil when there was none or orphan kept it.
func (d *Driver) DeleteEndpointIf(id string, orphan func(*store.Endpoint) (bool, error)) (*store.Endpoint, error) {
	defer d.lockEndpoint(id)()
	return d.deleteEndpointIf(id, orphan)
}

// DeleteEndpointsIf is DeleteEndpointIf for each of ids, all under the
// driver's exclusive lock: no docker call and no reconcile runs meanwhile.
// It goes on past errors, and returns them joined with the records it
// deleted.
func (d *Driver) DeleteEndpointsIf(ids []string, orphan func(*store.Endpoint) (bool, error)) ([]store.Endpoint, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []store.Endpoint
	var errs []error
	for _, id := range ids {
		ep, err := d.deleteEndpointIf(id, orphan)
		if err != nil {
			errs = append(errs, err)
		} else if ep != nil {
			out = append(out, *ep)
		}
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("%d endpoint(s) not deleted: %w", len(errs), errors.Join(errs...))
	}
	return out, nil
}

// deleteEndpointIf is DeleteEndpointIf with the lock held.
func (d *Driver) deleteEndpointIf(id string, orphan func(*store.Endpoint) (bool, error)) (*store.Endpoint, error) {
	ep, err := d.store.Endpoint(id)
	if err != nil || ep == nil {
		return nil, err
	}
	if ok, err := orphan(ep); err != nil || !ok {
		return nil, err
	}
	if err := d.deleteEndpoint(ep); err != nil {
		return nil, fmt.Errorf("delete endpoint %s: %w", short(ep.ID), err)
	}
	return ep, nil
}

// DeleteNetworksIf deletes, under the driver's exclusive lock, every network
// without endpoints that orphan says is one (a network with endpoints is in
// use, whatever docker's IPAM did), and returns those it deleted. It goes
// on past a failed delete, and returns the errors joined.
func (d *Driver) DeleteNetworksIf(orphan func(*store.Network) bool) ([]store.Network, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	nets, err := d.store.Networks()
	if err != nil {
		return nil, err
	}
	eps, err := d.store.Endpoints()
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, ep := range eps {
		used[ep.NetworkID] = true
	}
	var out []store.Network
	var errs []error
	for i := range nets {
		n := &nets[i]
		if used[n.ID] || !orphan(n) {
			continue
		}
		if err := d.deleteNetwork(n); err != nil {
			errs = append(errs, fmt.Errorf("delete network %s: %w", short(n.ID), err))
			continue
		}
		out = append(out, *n)
	}
	return out, errors.Join(errs...)
}
