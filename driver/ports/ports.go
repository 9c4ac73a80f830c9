// Package ports is the pure side of publishing an endpoint's ports and the
// choice of their host ports; package driver runs the calls (records,
// firewall, rollback) and package portproxy holds the sockets.
//
// Each of docker's bindings becomes one or two mappings, as docker's bridge
// driver makes them: a binding without a host address is published on the
// network's host_binding_ipv4 (default 0.0.0.0) and, when that is 0.0.0.0,
// on :: too; the IPv6 one goes to the container's IPv6 address or, lacking
// one, to its IPv4 address through the proxy. Both get the same host port.
// A host port of 0 is taken from the kernel's ephemeral range, round
// robin; a range takes its first free port.
//
// A mapping is three things: a socket held on the host port (package
// portproxy: it keeps other processes off the port and relays loopback),
// firewall rules (DNAT and its companions, package firewall), and the
// endpoint record's Ports, written last. A port is refused when a stored
// mapping of any vxbridge endpoint overlaps it, or when binding it fails
// because a process holds it.
package ports

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/portproxy"
	"github.com/vxbridge/vxbridge/store"
)

// Reserver holds the published host ports (package portproxy).
type Reserver interface {
	// Reserve holds m's host port and relays it; portproxy.ErrInUse when
	// another socket holds it.
	Reserve(m portproxy.Mapping) error
	Release(m portproxy.Mapping)
	// Sync holds exactly want, reporting what it could not reserve.
	Sync(want []portproxy.Mapping) error
	// IPv6 says whether the host can listen on IPv6.
	IPv6() bool
	// EphemeralRange is where host ports for "-p PORT" come from.
	EphemeralRange() (lo, hi uint16, err error)
}

// noReserver stands in when there is no Reserver: ports are not held and
// nothing is relayed.
type noReserver struct{}

func (noReserver) Reserve(portproxy.Mapping) error            { return nil }
func (noReserver) Release(portproxy.Mapping)                  {}
func (noReserver) Sync([]portproxy.Mapping) error             { return nil }
func (noReserver) IPv6() bool                                 { return true }
func (noReserver) EphemeralRange() (lo, hi uint16, err error) { return 32768, 60999, nil }

// ErrRefused classifies a binding the user has to change (a malformed
// one, a port that is taken); the error's text says what and why.
var ErrRefused = errors.New("port binding refused")

type refusal string

func (r refusal) Error() string        { return string(r) }
func (r refusal) Is(target error) bool { return target == ErrRefused }

func refusef(format string, args ...any) error { return refusal(fmt.Sprintf(format, args...)) }

// Desired is the desired state of the published ports of eps whose network
// is in nets (by id): their firewall rules and their sockets.
func Desired(eps []store.Endpoint, nets map[string]*store.Network) ([]firewall.Ports, []portproxy.Mapping) {
	var rules []firewall.Ports
	var sockets []portproxy.Mapping
	for i := range eps {
		ep := &eps[i]
		n := nets[ep.NetworkID]
		if n == nil || len(ep.Ports) == 0 {
			continue
		}
		rules = append(rules, FirewallPorts(n, ep))
		for _, m := range ep.Ports {
			sockets = append(sockets, socket(m))
		}
	}
	return rules, sockets
}

// FirewallPorts is the firewall's view of the published ports of endpoint
// ep of network n.
func FirewallPorts(n *store.Network, ep *store.Endpoint) firewall.Ports {
	p := firewall.Ports{NetworkID: n.ID, EndpointID: ep.ID, Bridge: n.Bridge, Mappings: FirewallMappings(ep.Ports)}
	for _, s := range n.Subnets() {
		p.Subnets = append(p.Subnets, s.Pool)
	}
	return p
}

// FirewallMappings is the firewall's view of mappings.
func FirewallMappings(ms []store.PortMapping) []firewall.PortMapping {
	out := make([]firewall.PortMapping, len(ms))
	for i, m := range ms {
		out[i] = firewall.PortMapping{Proto: m.Proto, HostIP: m.HostIP, HostPort: m.HostPort,
			ContainerIP: m.ContainerIP, ContainerPort: m.ContainerPort}
	}
	return out
}

// socket is the relay's view of a mapping.
func socket(m store.PortMapping) portproxy.Mapping {
	return portproxy.Mapping{Proto: m.Proto, Host: netip.AddrPortFrom(m.HostIP, m.HostPort),
		Target: netip.AddrPortFrom(m.ContainerIP, m.ContainerPort)}
}

// List reads like docker ps: "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp".
func List(ms []store.PortMapping) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.String()
	}
	return strings.Join(s, ", ")
}

// short is how messages name a network or an endpoint: 12 hex, as docker.
func short(id string) string { return id[:min(12, len(id))] }
