package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	fwNets := make([]firewall.Network, 0, len(nets))
	for i := range nets {
		n := &nets[i]
		byID[n.ID] = n
		fwNets = append(fwNets, firewallNetwork(n))
	}
	// Firewall first: the bridges' traffic depends on it, and a failing
	// network below must not leave the others without rules.
	fwPorts, sockets := publishedPorts(eps, byID)
	if err := d.fw.Reconcile(fwNets, fwPorts); err != nil {
		rep.Errors = append(rep.Errors, err)
	}
	if err := d.ports.Sync(sockets); err != nil {
		rep.Errors = append(rep.Errors, fmt.Errorf("published ports: %w", err))
	}
	for _, n := range nets {
		if err := d.ensureNetwork(&n); err != nil {
			rep.Errors = append(rep.Errors, err)
		}
	}
	live := map[string]bool{}
	for i := range eps {
		if d.reconcileEndpoint(&eps[i], byID, rep) {
			live[endpointAlias(eps[i].ID)] = true
		}
	}
	rep.Endpoints = len(live)
	d.addrs.reset(keptEndpoints(eps, rep.DroppedEndpoints))
	for id := range byID {
		live[netAlias(id)] = true
		live[vxlanAlias(id)] = true
		live[gatewayAlias(id)] = true
	}
	d.removeOrphanLinks(d.links, "", live, rep)
	d.reconcileNamespaces(nets, live, rep)
	d.reconcileCrossHost(nets, eps)
	for _, e := range rep.Errors {
		d.log.Error("reconcile", "err", e)
	}
	err = errors.Join(rep.Errors...)
	if d.onReconcile != nil {
		d.onReconcile(err)
	}
	return rep, err
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

// jumpCheckDelays are when the firewall jumps are checked after a bridge
// appears: dockerd creates a network's bridge first and then inserts its
// FORWARD rules (above vxbridge's jump) over the next few hundred ms.
var jumpCheckDelays = []time.Duration{200 * time.Millisecond, time.Second, 3 * time.Second}

// BridgeAppeared tells the reconciler a bridge was created on the host. It
// never blocks: a burst of events collapses into one round of checks.
func (d *Driver) BridgeAppeared(name string) {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// RunReconciler reconciles every interval until ctx ends, so rules that
// dockerd rewrites or someone flushes come back; after BridgeAppeared it
// also puts the firewall jumps back within a fraction of a second.
func (d *Driver) RunReconciler(ctx context.Context, interval time.Duration) {
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	var checks []time.Duration // pending jump checks, as delays from the last one
	var timer <-chan time.Time
	var soon <-chan time.Time // a reconcile after a firewall change
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.fwKick:
			if soon == nil {
				soon = time.After(firewallSettle)
			}
		case <-soon:
			soon = nil
			d.reconcileAndLog()
		case <-d.kick:
			checks = deltas(jumpCheckDelays)
			timer = time.After(checks[0])
		case <-timer:
			if err := d.fw.EnsureJumps(); err != nil {
				d.log.Error("restore firewall jumps", "err", err)
			}
			checks = checks[1:]
			timer = nil
			if len(checks) > 0 {
				timer = time.After(checks[0])
			}
		case <-tick:
			d.reconcileAndLog()
		}
	}
}

func (d *Driver) reconcileAndLog() {
	rep, err := d.Reconcile()
	if err == nil && len(rep.RemovedLinks)+len(rep.RecreatedVeths)+len(rep.DroppedEndpoints) > 0 {
		d.log.Info("reconcile repaired state", "removed_links", rep.RemovedLinks,
			"recreated_veths", rep.RecreatedVeths, "dropped_endpoints", rep.DroppedEndpoints)
	}
}

// firewallSettle is how long after a firewall change the reconcile runs:
// long enough for a burst (dockerd re-creating its chains at start, an
// iptables-restore of many lines) to end, short enough that flushed rules
// are back within seconds.
var firewallSettle = time.Second

// FirewallChanged tells the reconciler that iptables rules changed
// (docker's, an operator's, or vxbridge's own). It never blocks: a burst of
// changes collapses into one Reconcile, firewallSettle later.
func (d *Driver) FirewallChanged() {
	select {
	case d.fwKick <- struct{}{}:
	default:
	}
}

// deltas turns absolute delays into the waits between them.
func deltas(at []time.Duration) []time.Duration {
	out := make([]time.Duration, len(at))
	var prev time.Duration
	for i, d := range at {
		out[i], prev = d-prev, d
	}
	return out
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
