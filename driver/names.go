package driver

import (
	"net/netip"
	"strconv"

	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/peers"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/store"
)

// Names of cross-host containers. After Join the container's name is
// sought in its sandbox (package names, in the background: Learn returns
// at once) and published with the endpoint's record; Leave takes it back.
// The names are kept in memory only: after a restart the reconciler seeks
// them again for every joined endpoint.

// epName is what a joined cross-host endpoint publishes of its container.
type epName struct {
	sandbox      string
	rec          cluster.Endpoint // the record without the name
	name, domain string           // empty until learned
}

// learnName starts seeking the name of a joined cross-host endpoint's
// container. It never waits. Endpoint lock held.
func (d *Driver) learnName(n *store.Network, ep *store.Endpoint) {
	if n.VNI == 0 || d.xh == nil || d.xh.cfg.Names == nil || !ep.Joined || ep.Sandbox == "" {
		return
	}
	addr := ep.IPv4.Addr()
	if !addr.IsValid() {
		addr = ep.IPv6.Addr()
	}
	d.xh.mu.Lock()
	if e := d.xh.names[ep.ID]; e == nil || e.sandbox != ep.Sandbox {
		d.xh.names[ep.ID] = &epName{sandbox: ep.Sandbox, rec: endpointRecord(n, ep)}
	}
	d.xh.mu.Unlock()
	id, sandbox := ep.ID, ep.Sandbox
	d.xh.cfg.Names.Learn(id, sandbox, addr, func(name, domain string) { d.endpointNamed(id, sandbox, name, domain) })
}

// endpointNamed publishes a learned name, unless the endpoint left the
// sandbox it was sought in meanwhile. It runs in the learner's goroutine
// and waits only for this endpoint's lock.
func (d *Driver) endpointNamed(id, sandbox, name, domain string) {
	defer d.lockEndpoint(id)()
	d.xh.mu.Lock()
	e := d.xh.names[id]
	if e == nil || e.sandbox != sandbox {
		d.xh.mu.Unlock()
		return
	}
	e.name, e.domain = name, domain
	rec := e.named()
	d.xh.mu.Unlock()
	d.cluster().Publish(rec)
	d.log.Info("container name published with its endpoint", "endpoint", id, "name", name, "domain", domain)
}

// forgetName stops seeking endpoint id's name and takes a published one
// back (the record stays until the endpoint is deleted). Endpoint lock
// held.
func (d *Driver) forgetName(id string) {
	if d.xh == nil || d.xh.cfg.Names == nil {
		return
	}
	d.xh.cfg.Names.Forget(id)
	d.xh.mu.Lock()
	e := d.xh.names[id]
	delete(d.xh.names, id)
	d.xh.mu.Unlock()
	if e != nil && e.name != "" {
		d.cluster().Publish(e.rec)
	}
}

// withName returns rec with its container's name, if learned.
func (d *Driver) withName(rec cluster.Endpoint) cluster.Endpoint {
	d.xh.mu.Lock()
	defer d.xh.mu.Unlock()
	if e := d.xh.names[rec.ID]; e != nil {
		rec.Name, rec.Domain = e.name, e.domain
	}
	return rec
}

func (e *epName) named() cluster.Endpoint {
	rec := e.rec
	rec.Name, rec.Domain = e.name, e.domain
	return rec
}

// endpointRecord is endpoint ep's cross-host record, without its name.
func endpointRecord(n *store.Network, ep *store.Endpoint) cluster.Endpoint {
	return cluster.Endpoint{ID: ep.ID, VNI: n.VNI, MAC: ep.MAC, IPv4: addrOf(ep.IPv4), IPv6: addrOf(ep.IPv6)}
}

func addrOf(p netip.Prefix) netip.Addr {
	if p.IsValid() {
		return p.Addr()
	}
	return netip.Addr{}
}

// nameRows lists the names each network answers, by VNI then name.
func nameRows(nets []peers.Status) []status.Name {
	var out []status.Name
	for _, n := range nets {
		for _, e := range n.Names {
			row := status.Name{Network: strconv.FormatUint(uint64(n.VNI), 10), Name: e.Name}
			for _, a := range e.Addrs {
				row.Addresses = append(row.Addresses, a.String())
			}
			out = append(out, row)
		}
	}
	return out
}
