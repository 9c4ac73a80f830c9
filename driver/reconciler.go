package driver

import (
	"context"
	"log/slog"
	"time"
)

// The reconciler runs Reconcile again whenever the kernel may have drifted
// from the records: every interval, so rules that dockerd rewrites or
// someone flushes come back; soon after a firewall change; and after a
// bridge appears it puts the firewall jumps back within a fraction of a
// second. It holds only what its loop needs, so it is tested without a
// driver.

// jumpCheckDelays are when the firewall jumps are checked after a bridge
// appears: dockerd creates a network's bridge first and then inserts its
// FORWARD rules (above vxbridge's jump) over the next few hundred ms.
var jumpCheckDelays = []time.Duration{200 * time.Millisecond, time.Second, 3 * time.Second}

// firewallSettle is how long after a firewall change the reconcile runs:
// long enough for a burst (dockerd re-creating its chains at start, an
// iptables-restore of many lines) to end, short enough that flushed rules
// are back within seconds.
const firewallSettle = time.Second

type reconciler struct {
	pass        func() (*ReconcileReport, error) // one Reconcile run
	ensureJumps func() error                     // puts the firewall jumps back
	log         *slog.Logger

	bridgeKick chan struct{} // bridgeAppeared -> run
	fwKick     chan struct{} // firewallChanged -> run

	jumpChecks []time.Duration // jumpCheckDelays
	settle     time.Duration   // firewallSettle
}

func newReconciler(pass func() (*ReconcileReport, error), ensureJumps func() error, log *slog.Logger) *reconciler {
	return &reconciler{pass: pass, ensureJumps: ensureJumps, log: log,
		bridgeKick: make(chan struct{}, 1), fwKick: make(chan struct{}, 1),
		jumpChecks: jumpCheckDelays, settle: firewallSettle}
}

// RunReconciler reconciles every interval (none if 0) until ctx ends, soon
// after FirewallChanged, and checks the firewall jumps after BridgeAppeared.
func (d *Driver) RunReconciler(ctx context.Context, interval time.Duration) {
	d.reconciler.run(ctx, interval)
}

// BridgeAppeared tells the reconciler a bridge was created on the host. It
// never blocks: a burst of events collapses into one round of checks.
func (d *Driver) BridgeAppeared(name string) { kick(d.reconciler.bridgeKick) }

// FirewallChanged tells the reconciler that iptables rules changed
// (docker's, an operator's, or vxbridge's own). It never blocks: a burst of
// changes collapses into one Reconcile, firewallSettle later.
func (d *Driver) FirewallChanged() { kick(d.reconciler.fwKick) }

// kick signals c without waiting: a signal already pending stands for both.
func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (r *reconciler) run(ctx context.Context, interval time.Duration) {
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	var checks []time.Duration // pending jump checks, as delays from the last one
	var timer <-chan time.Time
	// A reconcile after a firewall change, not postponed by the changes
	// after it: under a steady stream of them it still runs.
	var soon <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.fwKick:
			if soon == nil {
				soon = time.After(r.settle)
			}
		case <-soon:
			soon = nil
			r.passAndLog()
		case <-r.bridgeKick:
			checks = deltas(r.jumpChecks)
			timer = time.After(checks[0])
		case <-timer:
			if err := r.ensureJumps(); err != nil {
				r.log.Error("restore firewall jumps", "err", err)
			}
			checks = checks[1:]
			timer = nil
			if len(checks) > 0 {
				timer = time.After(checks[0])
			}
		case <-tick:
			r.passAndLog()
		}
	}
}

// passAndLog runs one Reconcile; what it repaired is worth a line (its
// errors the pass logs itself).
func (r *reconciler) passAndLog() {
	rep, err := r.pass()
	if err == nil && len(rep.RemovedLinks)+len(rep.RecreatedVeths)+len(rep.DroppedEndpoints) > 0 {
		r.log.Info("reconcile repaired state", "removed_links", rep.RemovedLinks,
			"recreated_veths", rep.RecreatedVeths, "dropped_endpoints", rep.DroppedEndpoints)
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
