package driver

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// loopProbe counts what a reconciler's loop does, in place of a driver.
type loopProbe struct {
	mu            sync.Mutex
	passes, jumps int
}

func (p *loopProbe) counts() (passes, jumps int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.passes, p.jumps
}

// probeReconciler is a reconciler on p with short delays.
func probeReconciler(p *loopProbe) *reconciler {
	pass := func() (*ReconcileReport, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.passes++
		return &ReconcileReport{}, nil
	}
	jumps := func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.jumps++
		return nil
	}
	r := newReconciler(pass, jumps, slog.New(slog.DiscardHandler))
	r.settle = 20 * time.Millisecond
	r.jumpChecks = []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond}
	return r
}

// runLoop runs r's loop until the test ends.
func runLoop(t *testing.T, r *reconciler, interval time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.run(ctx, interval); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitFor polls cond until it holds or a few seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReconcilerRunsEveryInterval(t *testing.T) {
	p := &loopProbe{}
	runLoop(t, probeReconciler(p), 10*time.Millisecond)
	waitFor(t, "three reconciles", func() bool { n, _ := p.counts(); return n >= 3 })
}

// Firewall changes arriving faster than the settle time must not postpone
// the reconcile for as long as they go on.
func TestReconcilerFirewallStreamStillReconciles(t *testing.T) {
	p := &loopProbe{}
	r := probeReconciler(p)
	runLoop(t, r, 0)
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		kick(r.fwKick)
		time.Sleep(2 * time.Millisecond)
	}
	if n, _ := p.counts(); n < 2 {
		t.Errorf("%d reconciles during 300ms of firewall changes settling 20ms, want several", n)
	}
}

// A burst of new bridges is one round of jump checks, no reconcile. The
// burst comes before the loop runs, so it is one burst however slow the
// machine.
func TestReconcilerBridgeBurstIsOneRoundOfJumpChecks(t *testing.T) {
	p := &loopProbe{}
	r := probeReconciler(p)
	for range 5 {
		kick(r.bridgeKick)
	}
	runLoop(t, r, 0)
	waitFor(t, "the jump checks", func() bool { _, j := p.counts(); return j >= len(r.jumpChecks) })
	time.Sleep(50 * time.Millisecond)
	if n, j := p.counts(); j != len(r.jumpChecks) || n != 0 {
		t.Errorf("%d jump checks and %d reconciles for a burst, want %d and 0", j, n, len(r.jumpChecks))
	}
}

func TestBridgeAppearedRestoresJumpsPromptly(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { h.d.RunReconciler(ctx, 0); close(done) }()
	for range 5 { // a burst collapses into one round of checks
		h.d.BridgeAppeared("br-123")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.fw.Lock()
		n := h.fw.JumpFixes
		h.fw.Unlock()
		if n >= len(jumpCheckDelays) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d jump checks after a new bridge, want %d", n, len(jumpCheckDelays))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if h.fw.JumpFixes > len(jumpCheckDelays)*2 {
		t.Errorf("%d jump checks for one burst", h.fw.JumpFixes)
	}
}
