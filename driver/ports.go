package driver

// Published ports. Because vxbridge gives its containers their default
// gateway, docker leaves NAT and -p to it: ProgramExternalConnectivity
// arrives for the endpoint holding the sandbox's gateway, with docker's port
// bindings, and RevokeExternalConnectivity before that endpoint leaves.
//
// Each binding becomes one or two mappings, as docker's bridge driver makes
// them: a binding without a host address is published on the network's
// host_binding_ipv4 (default 0.0.0.0) and, when that is 0.0.0.0, on :: too;
// the IPv6 one goes to the container's IPv6 address or, lacking one, to its
// IPv4 address through the proxy. Both get the same host port. A host port
// of 0 is taken from the kernel's ephemeral range, round robin; a range
// takes its first free port.
//
// A mapping is three things: a socket held on the host port (package
// portproxy: it keeps other processes off the port and relays loopback),
// firewall rules (DNAT and its companions, package firewall), and the
// endpoint record's Ports, written last. A port is refused when a stored
// mapping of any vxbridge endpoint overlaps it, or when binding it fails
// because a process holds it; then nothing of the call stays behind.

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/portproxy"
	"github.com/vxbridge/vxbridge/store"
)

// keyPortsInfo is where EndpointOperInfo reports the published ports.
const keyPortsInfo = "vxbridge.ports"

// PortReserver holds the published host ports (package portproxy).
type PortReserver interface {
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

// noReserver stands in when Config has no PortReserver: ports are not held
// and nothing is relayed.
type noReserver struct{}

func (noReserver) Reserve(portproxy.Mapping) error            { return nil }
func (noReserver) Release(portproxy.Mapping)                  {}
func (noReserver) Sync([]portproxy.Mapping) error             { return nil }
func (noReserver) IPv6() bool                                 { return true }
func (noReserver) EphemeralRange() (lo, hi uint16, err error) { return 32768, 60999, nil }

// ProgramExternalConnectivity publishes the endpoint's ports.
func (d *Driver) ProgramExternalConnectivity(req *network.ProgramExternalConnectivityRequest) error {
	d.log.Debug("program external connectivity", "endpoint", req.EndpointID, "options", req.Options)
	binds, err := parsePortMap(req.Options)
	if err != nil {
		return err
	}
	defer d.lockEndpoint(req.EndpointID)()
	d.portMu.Lock() // the port check reads every endpoint's ports
	defer d.portMu.Unlock()
	n, ep, err := d.lookup(req.NetworkID, req.EndpointID)
	if err != nil {
		return err
	}
	if ep == nil {
		return invalidf("endpoint %s does not exist on network %s", short(req.EndpointID), short(n.ID))
	}
	if n.Internal && len(binds) > 0 {
		return invalidf("network %s is internal: its containers cannot publish ports", short(n.ID))
	}
	wants, err := expandPorts(binds, n, ep, d.ports.IPv6())
	if err != nil {
		return err
	}
	if len(ep.Ports) > 0 && satisfied(ep.Ports, wants) {
		return d.ensurePorts(n, ep) // a replay: the same ports again
	}
	if len(ep.Ports) > 0 {
		if err := d.unpublish(ep); err != nil {
			return err
		}
	}
	if len(wants) == 0 {
		return nil
	}
	return d.publish(n, ep, wants)
}

func (d *Driver) publish(n *store.Network, ep *store.Endpoint, wants []portWant) (retErr error) {
	mappings, err := d.allocatePorts(wants, ep.ID)
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			d.releasePorts(mappings)
		}
	}()
	ep.Ports = mappings
	if err := d.fw.EnsurePorts(firewallPorts(n, ep)); err != nil {
		return fmt.Errorf("firewall rules of the published ports of endpoint %s: %w", short(ep.ID), err)
	}
	d.crash(CrashPortsKernel)
	defer func() {
		if retErr != nil {
			d.logUndoErr("remove port rules", d.fw.RemovePorts(firewallPorts(n, ep)), "endpoint", ep.ID)
		}
	}()
	if err := d.store.SaveEndpoint(ep); err != nil {
		return err
	}
	d.log.Info("ports published", "network", short(n.ID), "endpoint", ep.ID, "ports", portList(mappings))
	return nil
}

// ensurePorts converges the kernel with the endpoint's stored mappings.
func (d *Driver) ensurePorts(n *store.Network, ep *store.Endpoint) error {
	for _, m := range ep.Ports {
		if err := d.ports.Reserve(proxyMapping(m)); err != nil {
			return fmt.Errorf("published port %s: %w", m, err)
		}
	}
	return d.fw.EnsurePorts(firewallPorts(n, ep))
}

// RevokeExternalConnectivity withdraws the endpoint's published ports;
// unknown endpoints and endpoints without ports are success.
func (d *Driver) RevokeExternalConnectivity(req *network.RevokeExternalConnectivityRequest) error {
	defer d.lockEndpoint(req.EndpointID)()
	ep, err := d.endpointOn(req.NetworkID, req.EndpointID)
	if err != nil || ep == nil || len(ep.Ports) == 0 {
		return err
	}
	return d.unpublish(ep)
}

// unpublish drops the endpoint's mappings from its record, then from the
// kernel.
func (d *Driver) unpublish(ep *store.Endpoint) error {
	old := ep.Ports
	ep.Ports = nil
	if err := d.store.SaveEndpoint(ep); err != nil {
		ep.Ports = old
		return err
	}
	d.crash(CrashPortsRevokeRecord)
	d.unpublishKernel(ep, old)
	return nil
}

// unpublishKernel removes mappings' rules, conntrack entries and sockets,
// logging failures: what is left, Reconcile removes (but for conntrack
// entries, which time out).
func (d *Driver) unpublishKernel(ep *store.Endpoint, mappings []store.PortMapping) {
	if len(mappings) == 0 {
		return
	}
	p := firewall.Ports{NetworkID: ep.NetworkID, EndpointID: ep.ID, Mappings: firewallMappings(mappings)}
	d.logUndoErr("remove port rules", d.fw.RemovePorts(p), "endpoint", ep.ID)
	d.releasePorts(mappings)
	d.log.Info("ports withdrawn", "network", short(ep.NetworkID), "endpoint", ep.ID, "ports", portList(mappings))
}

// publishedPorts is the desired state of the published ports of eps whose
// network is in nets: their firewall rules and their sockets.
func publishedPorts(eps []store.Endpoint, nets map[string]*store.Network) ([]firewall.Ports, []portproxy.Mapping) {
	var rules []firewall.Ports
	var sockets []portproxy.Mapping
	for i := range eps {
		ep := &eps[i]
		n := nets[ep.NetworkID]
		if n == nil || len(ep.Ports) == 0 {
			continue
		}
		rules = append(rules, firewallPorts(n, ep))
		for _, m := range ep.Ports {
			sockets = append(sockets, proxyMapping(m))
		}
	}
	return rules, sockets
}

func firewallPorts(n *store.Network, ep *store.Endpoint) firewall.Ports {
	p := firewall.Ports{NetworkID: n.ID, EndpointID: ep.ID, Bridge: n.Bridge, Mappings: firewallMappings(ep.Ports)}
	for _, s := range n.Subnets() {
		p.Subnets = append(p.Subnets, s.Pool)
	}
	return p
}

func firewallMappings(ms []store.PortMapping) []firewall.PortMapping {
	out := make([]firewall.PortMapping, len(ms))
	for i, m := range ms {
		out[i] = firewall.PortMapping{Proto: m.Proto, HostIP: m.HostIP, HostPort: m.HostPort,
			ContainerIP: m.ContainerIP, ContainerPort: m.ContainerPort}
	}
	return out
}

func proxyMapping(m store.PortMapping) portproxy.Mapping {
	return portproxy.Mapping{Proto: m.Proto, Host: netip.AddrPortFrom(m.HostIP, m.HostPort),
		Target: netip.AddrPortFrom(m.ContainerIP, m.ContainerPort)}
}

// portList reads like docker ps: "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp".
func portList(ms []store.PortMapping) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.String()
	}
	return strings.Join(s, ", ")
}
