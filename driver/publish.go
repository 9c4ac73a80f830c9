package driver

// Published ports. Because vxbridge gives its containers their default
// gateway, docker leaves NAT and -p to it: ProgramExternalConnectivity
// arrives for the endpoint holding the sandbox's gateway, with docker's port
// bindings, and RevokeExternalConnectivity before that endpoint leaves.
// Package ports turns the bindings into mappings and chooses their host
// ports (its comment tells how); here they are published: sockets,
// firewall rules, then the endpoint's record. A refused port leaves nothing
// of the call behind.

import (
	"errors"
	"fmt"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/driver/ports"
	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/store"
)

// keyPortsInfo is where EndpointOperInfo reports the published ports.
const keyPortsInfo = "vxbridge.ports"

// refused makes a refusal of package ports the user's to fix (ErrInvalid),
// its text kept.
func refused(err error) error {
	if errors.Is(err, ports.ErrRefused) {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return err
}

// ProgramExternalConnectivity publishes the endpoint's ports.
func (d *Driver) ProgramExternalConnectivity(req *network.ProgramExternalConnectivityRequest) error {
	d.log.Debug("program external connectivity", "endpoint", req.EndpointID, "options", req.Options)
	binds, err := ports.ParseBindings(req.Options)
	if err != nil {
		return refused(err)
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
	wants, err := ports.Expand(binds, n, ep, d.hostPorts.IPv6())
	if err != nil {
		return refused(err)
	}
	if len(ep.Ports) > 0 && ports.Satisfied(ep.Ports, wants) {
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

func (d *Driver) publish(n *store.Network, ep *store.Endpoint, wants []ports.Want) (retErr error) {
	eps, err := d.store.Endpoints()
	if err != nil {
		return err
	}
	mappings, err := d.hostPorts.Allocate(wants, ports.Taken(eps, ep.ID))
	if err != nil {
		return refused(err)
	}
	defer func() {
		if retErr != nil {
			d.hostPorts.Release(mappings)
		}
	}()
	ep.Ports = mappings
	if err := d.fw.EnsurePorts(ports.FirewallPorts(n, ep)); err != nil {
		return fmt.Errorf("firewall rules of the published ports of endpoint %s: %w", short(ep.ID), err)
	}
	d.crash(CrashPortsKernel)
	defer func() {
		if retErr != nil {
			d.logUndoErr("remove port rules", d.fw.RemovePorts(ports.FirewallPorts(n, ep)), "endpoint", ep.ID)
		}
	}()
	if err := d.store.SaveEndpoint(ep); err != nil {
		return err
	}
	d.log.Info("ports published", "network", short(n.ID), "endpoint", ep.ID, "ports", ports.List(mappings))
	return nil
}

// ensurePorts converges the kernel with the endpoint's stored mappings.
func (d *Driver) ensurePorts(n *store.Network, ep *store.Endpoint) error {
	if err := d.hostPorts.Hold(ep.Ports); err != nil {
		return err
	}
	return d.fw.EnsurePorts(ports.FirewallPorts(n, ep))
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
	p := firewall.Ports{NetworkID: ep.NetworkID, EndpointID: ep.ID, Mappings: ports.FirewallMappings(mappings)}
	d.logUndoErr("remove port rules", d.fw.RemovePorts(p), "endpoint", ep.ID)
	d.hostPorts.Release(mappings)
	d.log.Info("ports withdrawn", "network", short(ep.NetworkID), "endpoint", ep.ID, "ports", ports.List(mappings))
}
