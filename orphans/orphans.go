// Package orphans collects orphans: what docker left allocated for nobody,
// because a crash or an outage of the plugin lost the docker call that would
// have freed it, and that no call will ever free. It is the one place that
// judges them; the network driver deletes them under its locks (its
// DeleteEndpointIf, DeleteEndpointsIf, DeleteNetworksIf) and vxbridge's IPAM
// frees their addresses, each reached through a small interface
// (collector.go). The orphans are:
//
//   - an endpoint never joined: docker sends Join right after
//     CreateEndpoint (libnetwork's connectToNetwork), so one that stays
//     unjoined for minutes was rolled back by docker while vxbridge could not
//     hear the DeleteEndpoint (it was down for longer than docker's 30 s of
//     retries);
//   - an endpoint left while vxbridge was down: docker removed its container
//     then, and never replays the Leave and DeleteEndpoint (restart.go);
//   - an endpoint address (dynamic or --ip) in the pool of a vxbridge network
//     that no endpoint record holds: RequestAddress is followed by
//     CreateEndpoint within milliseconds, so an address unheld for minutes
//     was handed out in a reply a crash cut off (docker's retry got another
//     one) or released while vxbridge was down;
//   - a pool with no address taken at all and no vxbridge network on it:
//     docker asks for the gateway right after every RequestPool, so one that
//     stays empty for minutes was stored by a plugin that died before
//     replying (docker never learned its id);
//   - an endpoint never joined, or a network without endpoints, on an
//     address or pool docker releases: docker has given it up (release.go).
//
// The first, third and fourth are judged over time (collector.go): a
// Tracker remembers when each candidate was first seen and reports it only
// once it has stayed a candidate for the grace period, well beyond any
// docker call sequence and its retries. The Tracker is pure: the caller
// lists the store and does the deleting.
package orphans

import (
	"net/netip"
	"sort"
	"time"

	"github.com/vxbridge/vxbridge/store"
)

// DefaultGrace is how long a candidate must stay one before it is
// collected: four times docker's 30 s of plugin-call retries.
const DefaultGrace = 2 * time.Minute

// Address is an endpoint address no endpoint holds.
type Address struct {
	PoolID string
	Addr   netip.Addr
}

// State is what the store holds, listed once per pass.
type State struct {
	Networks  []store.Network
	Endpoints []store.Endpoint
	Pools     []store.Pool
	// Taken lists a pool's taken addresses (store.DB.Addresses).
	Taken func(poolID string) (map[netip.Addr]store.AddressKind, error)
}

// Found is what one pass reports as collectable.
type Found struct {
	NeverJoined []store.Endpoint
	Addresses   []Address
	Pools       []string // pool ids
}

// Tracker remembers candidates across passes. The zero value is ready.
type Tracker struct {
	since map[string]time.Time
}

// Pass looks at st at time now and returns the candidates that have been
// candidates for at least grace. Candidates that stopped being one are
// dropped, so one that comes back starts its wait again.
func (t *Tracker) Pass(st State, now time.Time, grace time.Duration) (Found, error) {
	seen := map[string]time.Time{}
	old := func(key string, since time.Time) bool {
		first, ok := t.since[key]
		if !ok {
			first = now
		}
		if !since.IsZero() && since.Before(first) {
			first = since // a stored time survives plugin restarts
		}
		seen[key] = first
		return now.Sub(first) >= grace
	}
	var out Found
	held := map[netip.Addr]bool{}
	for _, ep := range st.Endpoints {
		for _, p := range []netip.Prefix{ep.IPv4, ep.IPv6} {
			if p.IsValid() {
				held[p.Addr()] = true
			}
		}
		if !ep.Joined && old("ep/"+ep.ID, ep.Created) {
			out.NeverJoined = append(out.NeverJoined, ep)
		}
	}
	var err error
	if out.Pools, err = emptyPools(st, old); err != nil {
		return Found{}, err
	}
	if out.Addresses, err = unheldAddresses(st, held, old); err != nil {
		return Found{}, err
	}
	t.since = seen
	return out, nil
}

// emptyPools are the ids, sorted, of the pools without a network on them
// and without any address taken that are old enough (old, of Pass).
func emptyPools(st State, old func(key string, since time.Time) bool) ([]string, error) {
	onNetwork := map[netip.Prefix]bool{}
	for _, n := range st.Networks {
		for _, s := range n.Subnets() {
			onNetwork[s.Pool.Masked()] = true
		}
	}
	var out []string
	for _, p := range st.Pools {
		if onNetwork[p.Prefix.Masked()] {
			continue
		}
		taken, err := st.Taken(p.ID)
		if err != nil {
			return nil, err
		}
		if len(taken) == 0 && old("pool/"+p.ID, time.Time{}) {
			out = append(out, p.ID)
		}
	}
	sort.Strings(out)
	return out, nil
}

// unheldAddresses are the endpoint addresses, sorted, taken in the pool of
// a single-host network but not held by any endpoint record, that are old
// enough (old, of Pass).
func unheldAddresses(st State, held map[netip.Addr]bool, old func(key string, since time.Time) bool) ([]Address, error) {
	var out []Address
	for _, p := range localNetworkPools(st.Networks, st.Pools) {
		taken, err := st.Taken(p.ID)
		if err != nil {
			return nil, err
		}
		for a, kind := range taken {
			if kind != store.KindEndpoint && kind != store.KindStatic || held[a] {
				continue
			}
			if old("addr/"+p.ID+"/"+a.String(), time.Time{}) {
				out = append(out, Address{PoolID: p.ID, Addr: a})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].PoolID != out[j].PoolID {
			return out[i].PoolID < out[j].PoolID
		}
		return out[i].Addr.Less(out[j].Addr)
	})
	return out, nil
}

// localNetworkPools are the vxbridge IPAM pools that are the subnet of a
// single-host vxbridge network: there, every endpoint address belongs to an
// endpoint this host's store knows. (A pool used by another driver's network
// is not vxbridge's to judge; a cross-host pool's addresses also belong to
// other hosts' endpoints.)
func localNetworkPools(nets []store.Network, pools []store.Pool) []store.Pool {
	local := map[netip.Prefix]bool{}
	for _, n := range nets {
		if n.VNI != 0 {
			continue
		}
		for _, s := range n.Subnets() {
			local[s.Pool.Masked()] = true
		}
	}
	var out []store.Pool
	for _, p := range pools {
		if local[p.Prefix.Masked()] {
			out = append(out, p)
		}
	}
	return out
}
