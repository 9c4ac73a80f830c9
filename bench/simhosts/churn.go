package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vxbridge/vxbridge/bench/sim"
)

// maxInFlight bounds the churn operations running at once: an operation
// waits for etcd only when its host needs a new address block, but while
// etcd is away they would pile up.
const maxInFlight = 512

// settleWait bounds the wait, after a churn or an add, until every write
// is in etcd and recorded.
const settleWait = 60 * time.Second

// churn starts req.Rate containers per second for req.Seconds, each on a
// random host of req.VNIs replacing one of its endpoints there (the
// lifetime policy picks which), then waits until every write is recorded.
func (f *fleet) churn(ctx context.Context, req sim.ChurnRequest) (sim.ChurnResult, error) {
	if req.Rate <= 0 || req.Seconds <= 0 {
		return sim.ChurnResult{}, fmt.Errorf("churn: rate %v/s for %v s: want both above 0", req.Rate, req.Seconds)
	}
	vnis := vniSet(req.VNIs)
	hosts := f.hostsIn(vnis)
	if len(hosts) == 0 {
		return sim.ChurnResult{}, fmt.Errorf("churn: no ready host in vxlan.id %v", req.VNIs)
	}
	var done, errs atomic.Int64
	begin := time.Now()
	skipped := pace(ctx, req.Rate, time.Duration(req.Seconds*float64(time.Second)), func() {
		h := hosts[f.intN(len(hosts))]
		if err := h.replace(vnis, f.pick, req.Tag); err != nil {
			errs.Add(1)
			f.fail(err)
			return
		}
		done.Add(1)
	})
	res := sim.ChurnResult{Starts: int(done.Load()), Stops: int(done.Load()), Errors: int(errs.Load()),
		Skipped: skipped, Seconds: time.Since(begin).Seconds()}
	if err := f.settle(ctx); err != nil {
		// Not a failure of the churn: the measurement of an etcd that
		// could not keep up.
		res.Pending, res.Unsettled = f.status().Pending, err.Error()
	}
	return res, nil
}

// pace calls op rate times a second for length, each call in a goroutine
// of its own, at most maxInFlight at once (a call that would be one more is
// skipped and counted), and returns when every call has.
func pace(ctx context.Context, rate float64, length time.Duration, op func()) (skipped int) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxInFlight)
	tick := time.NewTicker(max(time.Duration(float64(time.Second)/rate), time.Millisecond))
	defer tick.Stop()
	begin, issued := time.Now(), 0
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			return skipped
		case now = <-tick.C:
		}
		elapsed := min(now.Sub(begin), length)
		for due := int(rate * elapsed.Seconds()); issued < due; issued++ {
			select {
			case sem <- struct{}{}:
			default:
				skipped++
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				op()
			}()
		}
		if elapsed >= length {
			return skipped
		}
	}
}

// add starts req.Count kept endpoints in req.VNI, one on each of as many
// random hosts, and returns once they are in etcd and recorded.
func (f *fleet) add(ctx context.Context, req sim.AddRequest) (sim.AddResult, error) {
	hosts := f.hostsIn(map[uint32]bool{req.VNI: true})
	if req.Count < 1 || req.Count > len(hosts) {
		return sim.AddResult{}, fmt.Errorf("add: %d endpoints in vxlan.id %d: want 1 to %d (its hosts)", req.Count, req.VNI, len(hosts))
	}
	var res sim.AddResult
	for _, k := range f.distinct(len(hosts), req.Count) {
		mac, err := hosts[k].start(req.VNI, req.Tag)
		if err != nil {
			return res, err
		}
		res.MACs = append(res.MACs, mac)
	}
	return res, f.settle(ctx)
}

// distinct is k different random indices below n.
func (f *fleet) distinct(n, k int) []int {
	f.rmu.Lock()
	defer f.rmu.Unlock()
	return f.rng.Perm(n)[:k]
}

// settle waits until no write is pending, then until the records file
// holds every record written so far (also when the wait ran out).
func (f *fleet) settle(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, settleWait)
	defer cancel()
	var err error
	for err == nil && f.status().Pending > 0 {
		select {
		case <-sctx.Done():
			err = errors.New("writes still not in etcd after " + settleWait.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
	defer fcancel()
	return errors.Join(err, f.cfg.rec.flush(fctx))
}
