package driver

import (
	"net/netip"
	"sync"

	"github.com/vxbridge/vxbridge/store"
)

// addrIndex maps endpoint addresses to the ids of the endpoint records
// holding them, so EndpointsHolding, asked on every ReleaseAddress, names
// the few records that matter instead of reading them all. It follows the
// records: filled by Reconcile (at start-up, before serving), updated where
// a record is created or deleted.
type addrIndex struct {
	mu  sync.Mutex
	eps map[netip.Addr]map[string]bool
}

func (x *addrIndex) reset(eps []store.Endpoint) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.eps = map[netip.Addr]map[string]bool{}
	for i := range eps {
		x.addLocked(&eps[i])
	}
}

func (x *addrIndex) add(ep *store.Endpoint) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.addLocked(ep)
}

func (x *addrIndex) addLocked(ep *store.Endpoint) {
	if x.eps == nil {
		x.eps = map[netip.Addr]map[string]bool{}
	}
	for _, p := range []netip.Prefix{ep.IPv4, ep.IPv6} {
		if !p.IsValid() {
			continue
		}
		if x.eps[p.Addr()] == nil {
			x.eps[p.Addr()] = map[string]bool{}
		}
		x.eps[p.Addr()][ep.ID] = true
	}
}

func (x *addrIndex) remove(ep *store.Endpoint) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, p := range []netip.Prefix{ep.IPv4, ep.IPv6} {
		if ids := x.eps[p.Addr()]; ids != nil {
			delete(ids, ep.ID)
			if len(ids) == 0 {
				delete(x.eps, p.Addr())
			}
		}
	}
}

// holders returns the ids of the records holding a.
func (x *addrIndex) holders(a netip.Addr) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []string
	for id := range x.eps[a] {
		out = append(out, id)
	}
	return out
}
