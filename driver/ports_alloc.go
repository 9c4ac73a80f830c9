package driver

// Choosing host ports: a stored mapping of any endpoint that overlaps a
// candidate rules it out, then the sockets decide (a process may hold it).

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/vxbridge/vxbridge/portproxy"
	"github.com/vxbridge/vxbridge/store"
)

// portOwner is a stored mapping and whose it is, for conflict messages.
type portOwner struct {
	store.PortMapping
	endpoint, network string // "": asked for earlier in the same request
}

func (o portOwner) String() string {
	if o.endpoint == "" {
		return "the container asks for it twice"
	}
	return fmt.Sprintf("published by endpoint %s of vxbridge network %s", short(o.endpoint), short(o.network))
}

// allocatePorts chooses each binding's host port and holds its sockets; on
// failure it holds nothing.
func (d *Driver) allocatePorts(wants []portWant, epID string) (out []store.PortMapping, retErr error) {
	taken, err := d.takenPorts(epID)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			d.releasePorts(out)
		}
	}()
	for start := 0; start < len(wants); {
		end := start + 1
		for end < len(wants) && wants[end].group == wants[start].group {
			end++
		}
		got, err := d.allocateGroup(wants[start:end], taken)
		if err != nil {
			return out, err
		}
		for _, m := range got {
			taken = append(taken, portOwner{PortMapping: m}) // no endpoint: this request's own
		}
		out = append(out, got...)
		start = end
	}
	return out, nil
}

// takenPorts lists the stored mappings of every endpoint but epID.
func (d *Driver) takenPorts(epID string) ([]portOwner, error) {
	eps, err := d.store.Endpoints()
	if err != nil {
		return nil, err
	}
	var taken []portOwner
	for _, ep := range eps {
		if ep.ID == epID {
			continue
		}
		for _, m := range ep.Ports {
			taken = append(taken, portOwner{PortMapping: m, endpoint: ep.ID, network: ep.NetworkID})
		}
	}
	return taken, nil
}

// allocateGroup finds one host port that every want of a binding can have,
// and holds it.
func (d *Driver) allocateGroup(group []portWant, taken []portOwner) ([]store.PortMapping, error) {
	w := group[0]
	lo, hi, ephemeral := w.lo, w.hi, w.lo == 0
	if ephemeral {
		var err error
		if lo, hi, err = d.ports.EphemeralRange(); err != nil {
			return nil, fmt.Errorf("ephemeral port range: %w", err)
		}
	}
	size := int(hi) - int(lo) + 1
	first := 0
	if ephemeral {
		first = int(d.nextPort) % size // round robin: a port just released is not reused at once
	}
	var why error
	for i := range size {
		port := uint16(int(lo) + (first+i)%size)
		got, err := d.tryPort(group, port, taken)
		if err == nil {
			if ephemeral {
				d.nextPort = uint16((first + i + 1) % size)
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
		return nil, invalidf("Bind for %s failed: port is already allocated (no free port in the ephemeral range %d-%d)",
			netip.AddrPortFrom(w.hostIP, 0).Addr(), lo, hi)
	case size > 1:
		return nil, invalidf("Bind for %s failed: port is already allocated (every port of the range is taken)", w.hostRange())
	}
	return nil, invalidf("%v", why)
}

var errPortTaken = errors.New("port is already allocated")

// tryPort holds port for every want of group, or nothing.
func (d *Driver) tryPort(group []portWant, port uint16, taken []portOwner) (out []store.PortMapping, retErr error) {
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
			d.releasePorts(out)
		}
	}()
	for _, w := range group {
		m := w.mapping(port)
		if err := d.ports.Reserve(proxyMapping(m)); err != nil {
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

func (d *Driver) releasePorts(mappings []store.PortMapping) {
	for _, m := range mappings {
		d.ports.Release(proxyMapping(m))
	}
}

// randomPortStart spreads the first ephemeral ports of a fresh process.
func randomPortStart() uint16 { return uint16(rand.N(1 << 16)) }
