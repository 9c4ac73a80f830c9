package ports

// Choosing host ports: a stored mapping of any endpoint that overlaps a
// candidate rules it out, then the sockets decide (a process may hold it).

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"

	"github.com/vxbridge/vxbridge/portproxy"
	"github.com/vxbridge/vxbridge/store"
)

// Owner is a stored mapping and whose it is, for conflict messages.
type Owner struct {
	store.PortMapping
	endpoint, network string // "": asked for earlier in the same request
}

func (o Owner) String() string {
	if o.endpoint == "" {
		return "the container asks for it twice"
	}
	return fmt.Sprintf("published by endpoint %s of vxbridge network %s", short(o.endpoint), short(o.network))
}

// Taken lists the stored mappings of every endpoint of eps but epID: the
// host ports epID cannot have.
func Taken(eps []store.Endpoint, epID string) []Owner {
	var taken []Owner
	for _, ep := range eps {
		if ep.ID == epID {
			continue
		}
		for _, m := range ep.Ports {
			taken = append(taken, Owner{PortMapping: m, endpoint: ep.ID, network: ep.NetworkID})
		}
	}
	return taken
}

// Allocator chooses host ports and holds their sockets through a Reserver.
type Allocator struct {
	r Reserver

	mu sync.Mutex // one Allocate at a time: next
	// next is where the next ephemeral host port is looked for, as an
	// offset into the range.
	next uint16
}

// NewAllocator holds ports through r; nil r holds nothing and relays
// nothing (only the firewall publishes).
func NewAllocator(r Reserver) *Allocator {
	if r == nil {
		r = noReserver{}
	}
	// A random start spreads the first ephemeral ports of a fresh process.
	return &Allocator{r: r, next: uint16(rand.N(1 << 16))}
}

// IPv6 says whether the host can listen on IPv6.
func (a *Allocator) IPv6() bool { return a.r.IPv6() }

// Allocate chooses each binding's host port, none of taken, and holds its
// sockets; on failure it holds nothing. A port nobody can have is
// ErrRefused.
func (a *Allocator) Allocate(wants []Want, taken []Owner) (out []store.PortMapping, retErr error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer func() {
		if retErr != nil {
			a.Release(out)
		}
	}()
	for start := 0; start < len(wants); {
		end := start + 1
		for end < len(wants) && wants[end].group == wants[start].group {
			end++
		}
		got, err := a.allocateGroup(wants[start:end], taken)
		if err != nil {
			return out, err
		}
		for _, m := range got {
			taken = append(taken, Owner{PortMapping: m}) // no endpoint: this request's own
		}
		out = append(out, got...)
		start = end
	}
	return out, nil
}

// allocateGroup finds one host port that every want of a binding can have,
// and holds it. a.mu held.
func (a *Allocator) allocateGroup(group []Want, taken []Owner) ([]store.PortMapping, error) {
	w := group[0]
	lo, hi, ephemeral := w.lo, w.hi, w.lo == 0
	if ephemeral {
		var err error
		if lo, hi, err = a.r.EphemeralRange(); err != nil {
			return nil, fmt.Errorf("ephemeral port range: %w", err)
		}
	}
	size := int(hi) - int(lo) + 1
	first := 0
	if ephemeral {
		first = int(a.next) % size // round robin: a port just released is not reused at once
	}
	var why error
	for i := range size {
		port := uint16(int(lo) + (first+i)%size)
		got, err := a.tryPort(group, port, taken)
		if err == nil {
			if ephemeral {
				a.next = uint16((first + i + 1) % size)
			}
			return got, nil
		}
		if !errors.Is(err, errPortTaken) {
			return nil, err
		}
		why = err
	}
	switch {
	case ephemeral:
		return nil, refusef("Bind for %s failed: port is already allocated (no free port in the ephemeral range %d-%d)",
			netip.AddrPortFrom(w.hostIP, 0).Addr(), lo, hi)
	case size > 1:
		return nil, refusef("Bind for %s failed: port is already allocated (every port of the range is taken)", w.hostRange())
	}
	return nil, refusef("%v", why)
}

var errPortTaken = errors.New("port is already allocated")

// tryPort holds port for every want of group, or nothing.
func (a *Allocator) tryPort(group []Want, port uint16, taken []Owner) (out []store.PortMapping, retErr error) {
	for _, w := range group {
		m := w.mapping(port)
		for _, t := range taken {
			if overlaps(m, t.PortMapping) {
				return nil, fmt.Errorf("Bind for %s failed: %w (%s)", netip.AddrPortFrom(m.HostIP, port), errPortTaken, t)
			}
		}
	}
	defer func() {
		if retErr != nil {
			a.Release(out)
		}
	}()
	for _, w := range group {
		m := w.mapping(port)
		if err := a.r.Reserve(socket(m)); err != nil {
			if errors.Is(err, portproxy.ErrInUse) {
				return out, fmt.Errorf("Bind for %s failed: %w (another process on the host uses it)",
					netip.AddrPortFrom(m.HostIP, port), errPortTaken)
			}
			return out, fmt.Errorf("publish %s: %w", m, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// Hold holds the sockets of mappings already chosen (a replayed request);
// holding one already held is harmless.
func (a *Allocator) Hold(mappings []store.PortMapping) error {
	for _, m := range mappings {
		if err := a.r.Reserve(socket(m)); err != nil {
			return fmt.Errorf("published port %s: %w", m, err)
		}
	}
	return nil
}

// Release lets go of the sockets of mappings.
func (a *Allocator) Release(mappings []store.PortMapping) {
	for _, m := range mappings {
		a.r.Release(socket(m))
	}
}

// Sync holds exactly the sockets of want (Desired), reporting what it
// could not hold.
func (a *Allocator) Sync(want []portproxy.Mapping) error { return a.r.Sync(want) }
