package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vxbridge/vxbridge/bench/sim"
	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/ipam"
)

// fleet is every synthetic host of the process.
type fleet struct {
	plan     sim.Plan
	cfg      hostConfig
	watchers int
	policy   string // lifetime policy: which endpoint a start replaces

	rmu sync.Mutex
	rng *rand.Rand

	mu      sync.Mutex
	hosts   []*simHost // by index; nil until ready
	ready   int
	errs    int
	lastErr string
	views   atomic.Int64
}

// Lifetime policies: each start stops the host's oldest endpoint (every
// container lives while the host starts PerHost newer ones), or a random
// one of the host's.
const (
	policyOldest = "oldest"
	policyRandom = "random"
)

func newFleet(plan sim.Plan, cfg hostConfig, watchers int, policy string, seed uint64) *fleet {
	return &fleet{plan: plan, cfg: cfg, watchers: watchers, policy: policy,
		rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), hosts: make([]*simHost, plan.Hosts)}
}

func (f *fleet) intN(n int) int {
	f.rmu.Lock()
	defer f.rmu.Unlock()
	return f.rng.IntN(n)
}

func (f *fleet) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs++
	f.lastErr = err.Error()
}

// bringUp starts every host, parallel at most concurrency at a time, each
// joining its networks and publishing its first endpoints.
func (f *fleet) bringUp(ctx context.Context, concurrency int) {
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for i := range f.plan.Hosts {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			h, err := f.up(ctx, i)
			if err != nil {
				f.fail(fmt.Errorf("host %d: %w", i, err))
				return
			}
			f.mu.Lock()
			f.hosts[i] = h
			f.ready++
			f.mu.Unlock()
		}()
	}
	wg.Wait()
}

// countingSink follows a network as a vxbridge host does, counting the
// listings and batches it is given and programming nothing.
type countingSink struct{ n *atomic.Int64 }

func (s countingSink) Reset(cluster.NetworkState) { s.n.Add(1) }
func (s countingSink) Apply([]cluster.Change)     { s.n.Add(1) }

// hostID names synthetic host i.
func hostID(i int) string { return fmt.Sprintf("sim%05d", i) }

// vtepOf is host i's VTEP: 198.18.0.0/15 (benchmarking addresses), never
// on any interface; the observers only program entries pointing there.
func vtepOf(i int) netip.Addr {
	a := uint32(198)<<24 | uint32(18)<<16 | uint32(i+1)
	return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
}

func (f *fleet) up(ctx context.Context, i int) (*simHost, error) {
	h, err := newHost(ctx, hostID(i), vtepOf(i), f.cfg)
	if err != nil {
		return nil, err
	}
	jctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	nets := f.plan.HostNets(i)
	for _, k := range nets {
		if err := h.join(jctx, f.plan.Nets[k]); err != nil {
			return nil, err
		}
	}
	for j, k := range nets {
		for range sim.EndpointsIn(f.plan.PerHost, len(nets), j) {
			start := func() error { _, err := h.start(f.plan.Nets[k].VNI, "populate"); return err }
			if err := retry(jctx, start, ipam.ErrPoolExhausted); err != nil {
				return nil, err
			}
		}
	}
	if i < f.watchers {
		for _, k := range nets {
			go h.c.FollowNetwork(ctx, f.plan.Nets[k].VNI, countingSink{&f.views})
		}
	}
	return h, nil
}

func (f *fleet) readyHosts() []*simHost {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*simHost, 0, f.ready)
	for _, h := range f.hosts {
		if h != nil {
			out = append(out, h)
		}
	}
	return out
}

func (f *fleet) status() sim.Status {
	s := sim.Status{Hosts: f.plan.Hosts, Endpoints: map[uint32]int{}, Watchers: min(f.watchers, f.plan.Hosts), Views: f.views.Load()}
	for _, h := range f.readyHosts() {
		h.liveByVNI(s.Endpoints)
		s.Pending += h.stamps.count()
	}
	f.mu.Lock()
	s.Ready, s.Errors, s.LastError = f.ready, f.errs, f.lastErr
	f.mu.Unlock()
	return s
}

// hostsIn returns the ready hosts that are members of one of vnis (all
// hosts when vnis is nil).
func (f *fleet) hostsIn(vnis map[uint32]bool) []*simHost {
	var out []*simHost
	for _, h := range f.readyHosts() {
		for vni := range h.nets {
			if vnis == nil || vnis[vni] {
				out = append(out, h)
				break
			}
		}
	}
	return out
}

func vniSet(vnis []uint32) map[uint32]bool {
	if len(vnis) == 0 {
		return nil
	}
	m := map[uint32]bool{}
	for _, v := range vnis {
		m[v] = true
	}
	return m
}

// pick is the lifetime policy's choice among n candidates, oldest first.
func (f *fleet) pick(n int) int {
	if f.policy == policyRandom {
		return f.intN(n)
	}
	return 0
}
