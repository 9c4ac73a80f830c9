package driver

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/driver/ports"
	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/store"
)

// ReconcileReport says what one Reconcile run changed.
type ReconcileReport struct {
	Networks, Endpoints int // records known
	RemovedLinks        []string
	RecreatedVeths      []string
	DroppedEndpoints    []string // records whose network is gone
	Errors              []error
}

// Reconcile makes the kernel match the store: bridges and veths of stored
// networks and endpoints are (re)created, links vxbridge owns that no record
// claims are removed, and the firewall holds exactly the stored networks'
// rules. It never needs the Docker API.
func (d *Driver) Reconcile() (*ReconcileReport, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	// Exclusive: no link is being built, so one still marked as being
	// built was left so by a crash.
	purgeErr := d.links.PurgeUnfinished()
	nets, err := d.store.Networks()
	if err != nil {
		return nil, err
	}
	eps, err := d.store.Endpoints()
	if err != nil {
		return nil, err
	}
	rep := &ReconcileReport{Networks: len(nets)}
	if purgeErr != nil {
		rep.Errors = append(rep.Errors, purgeErr)
	}
	d.purgeNamespaces(nets, rep)
	byID := make(map[string]*store.Network, len(nets))
	for i := range nets {
		byID[nets[i].ID] = &nets[i]
	}
	d.reconcileFirewall(nets, eps, byID, rep)
	for _, n := range nets {
		if err := d.ensureNetwork(&n); err != nil {
			rep.Errors = append(rep.Errors, err)
		}
	}
	live := d.reconcileEndpoints(eps, byID, rep)
	d.removeOrphanLinks(d.links, "", live, rep)
	d.reconcileNamespaces(nets, live, rep)
	d.reconcileCrossHost(nets, eps)
	return rep, d.reported(rep)
}

// reconcileFirewall makes the firewall hold exactly the rules of nets and
// of the published ports of eps, and the sockets those ports need. It runs
// before the networks are ensured: the bridges' traffic depends on it, and
// a failing network must not leave the others without rules.
func (d *Driver) reconcileFirewall(nets []store.Network, eps []store.Endpoint, byID map[string]*store.Network, rep *ReconcileReport) {
	fwNets := make([]firewall.Network, 0, len(nets))
	for i := range nets {
		fwNets = append(fwNets, d.firewallNetwork(&nets[i]))
	}
	fwPorts, sockets := ports.Desired(eps, byID)
	if err := d.fw.Reconcile(fwNets, fwPorts); err != nil {
		rep.Errors = append(rep.Errors, err)
	}
	if err := d.hostPorts.Sync(sockets); err != nil {
		rep.Errors = append(rep.Errors, fmt.Errorf("published ports: %w", err))
	}
}

// reconcileEndpoints converges every endpoint of eps and returns the
// aliases of the links that stay (live): those of the endpoints still
// recorded and of every network of nets (by id).
func (d *Driver) reconcileEndpoints(eps []store.Endpoint, nets map[string]*store.Network, rep *ReconcileReport) map[string]bool {
	live := map[string]bool{}
	for i := range eps {
		if d.reconcileEndpoint(&eps[i], nets, rep) {
			live[endpointAlias(eps[i].ID)] = true
		}
	}
	rep.Endpoints = len(live)
	d.addrs.reset(keptEndpoints(eps, rep.DroppedEndpoints))
	for id := range nets {
		live[netAlias(id)] = true
		live[vxlanAlias(id)] = true
		live[gatewayAlias(id)] = true
	}
	return live
}

// reported logs the errors of a reconcile run, tells OnReconcile, and
// returns them joined.
func (d *Driver) reported(rep *ReconcileReport) error {
	for _, e := range rep.Errors {
		d.log.Error("reconcile", "err", e)
	}
	err := errors.Join(rep.Errors...)
	if d.onReconcile != nil {
		d.onReconcile(err)
	}
	return err
}

// reconcileEndpoint converges one endpoint and says whether it is still live.
func (d *Driver) reconcileEndpoint(ep *store.Endpoint, nets map[string]*store.Network, rep *ReconcileReport) bool {
	n := nets[ep.NetworkID]
	if n == nil {
		if err := d.store.DeleteEndpoint(ep.ID); err != nil {
			rep.Errors = append(rep.Errors, err)
			return true
		}
		rep.DroppedEndpoints = append(rep.DroppedEndpoints, ep.ID)
		return false
	}
	links, err := d.linksOf(n)
	if err != nil {
		rep.Errors = append(rep.Errors, err)
		return true
	}
	_, exists, err := links.Link(ep.HostVeth)
	if err != nil {
		rep.Errors = append(rep.Errors, err)
		return true
	}
	if !exists && ep.Joined {
		// The container end lived in a sandbox that is gone (the container
		// died while vxbridge was down). Docker deletes the endpoint when it
		// cleans the sandbox; the record keeps its address reserved until then.
		d.log.Warn("endpoint has lost its veth; waiting for docker to delete it", "endpoint", ep.ID, "veth", ep.HostVeth)
		return true
	}
	if err := d.ensureVeth(n, ep); err != nil {
		rep.Errors = append(rep.Errors, err)
	} else if !exists {
		rep.RecreatedVeths = append(rep.RecreatedVeths, ep.HostVeth)
	}
	return true
}

// removeOrphanLinks deletes the links of links carrying a vxbridge alias
// that is not live; netns names their namespace ("": the host's), for the
// report ("<netns>:<link>"), the errors and the log.
func (d *Driver) removeOrphanLinks(links Links, netns string, live map[string]bool, rep *ReconcileReport) {
	fail := func(err error) {
		if netns != "" {
			err = fmt.Errorf("namespace %s: %w", netns, err)
		}
		rep.Errors = append(rep.Errors, err)
	}
	owned, err := links.OwnedLinks(AliasPrefix)
	if err != nil {
		fail(err)
		return
	}
	for _, l := range owned {
		if live[l.Alias] {
			continue
		}
		if err := removeOwnedLink(links, l); err != nil {
			fail(err)
			continue
		}
		name := l.Name
		if netns != "" {
			name = netns + ":" + name
		}
		rep.RemovedLinks = append(rep.RemovedLinks, name)
		d.log.Info("removed orphan link", "netns", netns, "link", l.Name, "alias", l.Alias)
	}
}

// removeOwnedLink deletes a link carrying a vxbridge alias: a bridge only
// as vxbridge's (DeleteBridge checks), a gateway link likewise, any other
// link outright.
func removeOwnedLink(links Links, l bridge.LinkInfo) error {
	switch {
	case strings.HasPrefix(l.Alias, aliasNetPrefix) && l.Kind == "veth":
		return links.DeleteGateway(l.Name, l.Alias)
	case strings.HasPrefix(l.Alias, aliasNetPrefix):
		return links.DeleteBridge(l.Name, l.Alias)
	}
	return links.DeleteLink(l.Name)
}

// keptEndpoints is eps without the records Reconcile dropped.
func keptEndpoints(eps []store.Endpoint, dropped []string) []store.Endpoint {
	gone := map[string]bool{}
	for _, id := range dropped {
		gone[id] = true
	}
	var out []store.Endpoint
	for _, ep := range eps {
		if !gone[ep.ID] {
			out = append(out, ep)
		}
	}
	return out
}
