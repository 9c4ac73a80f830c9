package driver

import (
	"errors"
	"fmt"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/driver/ports"
	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/ownership"
	"github.com/vxbridge/vxbridge/ownership/mark"
	"github.com/vxbridge/vxbridge/store"
)

// ReconcileReport says what one Reconcile run changed.
type ReconcileReport struct {
	Networks, Endpoints int // records known
	RemovedLinks        []string
	RecreatedVeths      []string
	DroppedEndpoints    []string // records whose network is gone
	// Kept are the objects no record claims that the run left in place:
	// another state file's, or this state's while it is kept
	// (ownership.KeepUnclaimed). KeptOwn counts those of this state.
	Kept    []string
	KeptOwn int
	// TakenOver are the links given this state's identity (marks.go).
	TakenOver []string
	// Adopted are the records made for what the kernel showed (adopt.go).
	Adopted []string
	Errors  []error
}

// fail records err, naming namespace netns when it is not the host's.
func (r *ReconcileReport) fail(netns string, err error) {
	if netns != "" {
		err = fmt.Errorf("namespace %s: %w", netns, err)
	}
	r.Errors = append(r.Errors, err)
}

// kept records an object left in place; mine: this state made it.
func (r *ReconcileReport) kept(name string, mine bool) {
	r.Kept = append(r.Kept, name)
	if mine {
		r.KeptOwn++
	}
}

// Reconcile makes the kernel match the store: bridges and veths of stored
// networks and endpoints are (re)created, links this state made that no
// record claims are removed, and the firewall holds the stored networks'
// rules. Other state files' objects are left alone (marks.go). It never
// needs the Docker API.
func (d *Driver) Reconcile() (*ReconcileReport, error) { return d.reconcile(pass{}) }

// Start runs start-up's first reconcile as package ownership decided:
// Adopt makes records for what no record claims first, Purge deletes every
// object no record claims, KeepUnclaimed keeps this state's unclaimed
// objects for as long as the driver runs. Refuse is for the caller, which
// must not start: it is refused here too.
func (d *Driver) Start(a ownership.Action) (*ReconcileReport, error) {
	switch a {
	case ownership.Refuse:
		return nil, ownership.ErrRefused
	case ownership.KeepUnclaimed:
		d.mu.Lock()
		d.owners.keep = true
		d.mu.Unlock()
	}
	return d.reconcile(pass{adopt: a == ownership.Adopt, purge: a == ownership.Purge})
}

func (d *Driver) reconcile(p pass) (*ReconcileReport, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rep := &ReconcileReport{}
	// Exclusive: no link is being built, so one still marked as being
	// built was left so by a crash.
	if err := d.links.PurgeUnfinished(); err != nil {
		rep.fail("", err)
	}
	if p.adopt {
		d.adopt(rep)
	}
	nets, err := d.store.Networks()
	if err != nil {
		return nil, err
	}
	eps, err := d.store.Endpoints()
	if err != nil {
		return nil, err
	}
	rep.Networks = len(nets)
	byID := make(map[string]*store.Network, len(nets))
	for i := range nets {
		byID[nets[i].ID] = &nets[i]
	}
	claims := claimsOf(byID, eps)
	d.takeOver(d.links, "", claims, p, rep)
	d.prepareNamespaces(nets, claims, p, rep)
	d.reconcileFirewall(nets, eps, byID, claims, p, rep)
	for i := range nets {
		if err := d.ensureNetworkLinks(&nets[i]); err != nil {
			rep.Errors = append(rep.Errors, err)
		}
	}
	d.reconcileEndpoints(eps, byID, rep)
	d.removeOrphanLinks(d.links, "", claims, p, rep)
	d.reconcileNamespaces(nets, claims, p, rep)
	d.reconcileCrossHost(nets, eps)
	return rep, d.reported(rep)
}

// reconcileFirewall makes the firewall hold the rules of nets and of the
// published ports of eps, and the sockets those ports need; of the other
// rules, it deletes those of this state (or those start-up decided, p). It
// runs before the networks are ensured: the bridges' traffic depends on
// it, and a failing network must not leave the others without rules. It is
// the pass's one firewall call: under a held xtables lock the pass, and the
// driver lock with it, waits for one iptables timeout, not one per network.
func (d *Driver) reconcileFirewall(nets []store.Network, eps []store.Endpoint, byID map[string]*store.Network,
	claims map[claim]bool, p pass, rep *ReconcileReport) {
	fwNets := make([]firewall.Network, 0, len(nets))
	for i := range nets {
		fwNets = append(fwNets, d.firewallNetwork(&nets[i]))
	}
	fwPorts, sockets := ports.Desired(eps, byID)
	owns, kept := d.ownsRule(claims, p), map[string]bool{}
	err := d.fw.Reconcile(fwNets, fwPorts, func(r firewall.OwnedRule) bool {
		if owns(r) {
			return true
		}
		if !kept[r.Tag] {
			kept[r.Tag] = true
			rep.kept("rules:"+r.Tag, d.owners.mine(r.Owner))
		}
		return false
	})
	if err != nil {
		rep.Errors = append(rep.Errors, err)
	}
	if err := d.hostPorts.Sync(sockets); err != nil {
		rep.Errors = append(rep.Errors, fmt.Errorf("published ports: %w", err))
	}
}

// reconcileEndpoints converges every endpoint of eps.
func (d *Driver) reconcileEndpoints(eps []store.Endpoint, nets map[string]*store.Network, rep *ReconcileReport) {
	for i := range eps {
		if d.reconcileEndpoint(&eps[i], nets, rep) {
			rep.Endpoints++
		}
	}
	d.addrs.reset(keptEndpoints(eps, rep.DroppedEndpoints))
}

// Kept lists the objects no record claims that the last reconcile left in
// place (ReconcileReport.Kept). It takes no driver lock.
func (d *Driver) Kept() []string {
	if k := d.lastKept.Load(); k != nil {
		return *k
	}
	return nil
}

// reported logs the errors of a reconcile run, tells OnReconcile, and
// returns them joined.
func (d *Driver) reported(rep *ReconcileReport) error {
	d.lastKept.Store(&rep.Kept)
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

// removeOrphanLinks deletes the links of links that carry a vxbridge alias
// no record claims, when this pass may (mayDelete), and reports the others
// kept; netns names their namespace ("": the host's), for the report
// ("<netns>:<link>"), the errors and the log.
func (d *Driver) removeOrphanLinks(links Links, netns string, claims map[claim]bool, p pass, rep *ReconcileReport) {
	for _, l := range markedLinks(links, netns, rep) {
		if claims[l.claim] {
			continue
		}
		if !d.mayDelete(l.identity, p) {
			rep.kept(qualified(netns, l.Name), d.owners.mine(l.identity))
			continue
		}
		if err := removeOwnedLink(links, l.LinkInfo, l.claim); err != nil {
			rep.fail(netns, err)
			continue
		}
		rep.RemovedLinks = append(rep.RemovedLinks, qualified(netns, l.Name))
		d.log.Info("removed orphan link", "netns", netns, "link", l.Name, "alias", l.Alias)
	}
}

// removeOwnedLink deletes a link carrying a vxbridge alias: a bridge only
// as vxbridge's (DeleteBridge checks), a gateway link likewise, any other
// link outright.
func removeOwnedLink(links Links, l bridge.LinkInfo, c claim) error {
	switch {
	case c.kind == mark.Net && l.Kind == "veth":
		return links.DeleteGateway(l.Name, l.Alias)
	case c.kind == mark.Net:
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
