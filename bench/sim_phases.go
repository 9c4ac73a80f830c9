package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/bench/result"
	"github.com/vxbridge/vxbridge/bench/sim"
)

// snap is every process's counters at one moment.
type snap struct {
	at      time.Time
	machine time.Duration // busy time of every CPU
	obs     []procStat
	rx      []uint64 // observers' underlay bytes received
	etcd    etcdSample
	sim     procStat
}

func (p *simPoint) snapshot() snap {
	t := p.t
	s := snap{at: time.Now(), machine: machineBusy()}
	for _, ob := range p.obs {
		st, err := ob.stat()
		if err != nil {
			t.Fatal(err)
		}
		rx, err := ob.rxBytes()
		if err != nil {
			t.Fatal(err)
		}
		s.obs, s.rx = append(s.obs, st), append(s.rx, rx)
	}
	var err error
	if s.etcd, err = p.etcd.sample(); err != nil {
		t.Fatal(err)
	}
	if s.sim, err = readProcStat(p.sim.proc.Pid()); err != nil {
		t.Fatal(err)
	}
	return s
}

// phase is what the observers did while the cluster did something.
type phase struct {
	calls  []*samples // each observer's own docker calls
	rssMax []int
}

// during runs each observer's own endpoint lifecycles (probe) and samples
// its RSS while work runs, then stops them.
func (p *simPoint) during(work func()) phase {
	ph := phase{rssMax: make([]int, len(p.obs))}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, ob := range p.obs {
		s := &samples{calls: map[string][]time.Duration{}}
		ph.calls = append(ph.calls, s)
		wg.Add(2)
		go func() { defer wg.Done(); ob.probe(ctx, s) }()
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if st, err := ob.stat(); err == nil {
					ph.rssMax[i] = max(ph.rssMax[i], st.rssKiB)
				}
				sleepCtx(ctx, 500*time.Millisecond)
			}
		}()
	}
	work()
	cancel()
	wg.Wait()
	return ph
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// quiet: the cluster still, the observers' own calls only.
func (p *simPoint) quiet() {
	s1 := p.snapshot()
	ph := p.during(func() { time.Sleep(p.o.Quiet) })
	s2 := p.snapshot()
	wall := s2.at.Sub(s1.at)
	for i := range p.obs {
		r := &p.res.Observers[i]
		r.CPUQuiet = cores(s2.obs[i].cpu-s1.obs[i].cpu, wall)
		r.QuietCalls = callDists(ph.calls[i])
		r.RSSKiB = s2.obs[i].rssKiB
	}
}

// churn: the synthetic hosts start and stop containers in every network.
// False when etcd could not take their writes (the point ends there).
func (p *simPoint) churn() bool {
	t := p.t
	var res sim.ChurnResult
	var err error
	s1 := p.snapshot()
	ph := p.during(func() {
		res, err = p.sim.churn(sim.ChurnRequest{Rate: p.o.Rate, Seconds: p.o.Churn.Seconds(), Tag: "churn"})
	})
	s2 := p.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	recs, err := p.sim.readRecords("churn")
	if err != nil {
		t.Fatal(err)
	}
	p.res.Churn = result.SimChurn{Starts: res.Starts, Stops: res.Stops, Errors: res.Errors, Skipped: res.Skipped,
		Seconds: res.Seconds, Commit: result.SummariseMs(commitTimes(recs)), Pending: res.Pending}
	wall := s2.at.Sub(s1.at)
	p.res.Etcd = etcdStats(s1.etcd, s2.etcd)
	p.res.SimCPU, p.res.SimRSSKiB = cores(s2.sim.cpu-s1.sim.cpu, wall), s2.sim.rssKiB
	p.res.MachineBusy = cores(s2.machine-s1.machine, wall)
	t.Logf("churn: %d starts, %d stops in %.1f s (%d errors, %d skipped, %d not in etcd); etcd %.0f events/s, %.2f cores (%.2f waiting); machine busy %.2f cores",
		res.Starts, res.Stops, res.Seconds, res.Errors, res.Skipped, res.Pending, p.res.Etcd.EventsPerSecond, p.res.Etcd.CPU,
		p.res.Etcd.Wait, p.res.MachineBusy)
	if res.Pending > 0 {
		for i := range p.obs {
			r := &p.res.Observers[i]
			r.CPUChurn, r.ChurnCalls = cores(s2.obs[i].cpu-s1.obs[i].cpu, wall), callDists(ph.calls[i])
			r.WaitChurn = cores(s2.obs[i].wait-s1.obs[i].wait, wall)
		}
		return p.endEarly("etcd did not keep up with the synthetic hosts' writes: %d of them still not in etcd (%s); etcd used %.2f cores, publish to commit p50 %.0f ms, p99 %.0f ms",
			res.Pending, res.Unsettled, p.res.Etcd.CPU, p.res.Churn.Commit.P50Ms, p.res.Churn.Commit.P99Ms)
	}
	p.churned = recs
	var behind []string
	if !p.d.onDemand { // on demand, nothing is programmed before a packet asks
		behind = p.settleOn(recs)
	}
	for i, ob := range p.obs {
		p.res.Observers[i].WaitChurn = cores(s2.obs[i].wait-s1.obs[i].wait, wall)
		p.observeChurn(i, ob, recs, s2.obs[i].cpu-s1.obs[i].cpu, wall, ph)
	}
	if len(behind) > 0 {
		return p.endEarly("%s still behind the churn %v after it ended (the later phases would measure the backlog)",
			strings.Join(behind, ", "), syncWait(len(recs)))
	}
	return true
}

func (p *simPoint) observeChurn(i int, ob *observer, recs []sim.Record, cpu, wall time.Duration, ph phase) {
	r := &p.res.Observers[i]
	c := converge(recs, vniSet(ob.nets), ob.mon)
	if p.d.onDemand {
		c = convergence{changes: c.changes} // programmed when a packet asks, not on the write
	}
	r.Converge, r.FromPublish, r.Gone = result.SummariseMs(c.fromCommit), result.SummariseMs(c.fromPublish), result.SummariseMs(c.gone)
	r.Missed, r.GoneMissed, r.RemoteChanges = c.missed, c.goneMissed, c.changes
	r.CPUChurn = cores(cpu, wall)
	r.CPUPerChangeMs = perChangeMs(cpu, wall, r.CPUQuiet, c.changes)
	r.ChurnCalls = callDists(ph.calls[i])
	r.RSSMaxKiB = ph.rssMax[i]
	r.MonitorLost = ob.mon.lost.Load()
	if c.missed > 0 {
		logMissed(p.t, ob, recs)
	}
	var err error
	if r.FDB, r.Neigh, err = ob.tables(); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("%s: %.3f cores churning (%.3f waiting for a CPU; %.3f quiet), %.2f ms per remote change (%d), converge p50 %.1f p99 %.1f ms, missed %d; Join p99 %.1f ms (quiet %.1f)",
		ob.name, r.CPUChurn, r.WaitChurn, r.CPUQuiet, r.CPUPerChangeMs, c.changes, r.Converge.P50Ms, r.Converge.P99Ms, c.missed,
		r.ChurnCalls["NetworkDriver.Join"].P99Ms, r.QuietCalls["NetworkDriver.Join"].P99Ms)
}

func etcdStats(a, b etcdSample) result.SimEtcd {
	wall := b.at.Sub(a.at)
	return result.SimEtcd{EventsPerSecond: (b.events - a.events) / wall.Seconds(), Watchers: int(b.watchers),
		WatchStreams: int(b.streams), Keys: int(b.keys), DBBytes: int64(b.dbBytes), CPU: cores(b.cpu-a.cpu, wall), Wait: cores(b.wait-a.wait, wall),
		RSSKiB: b.rssKiB, SentBytesPerSec: (b.sent - a.sent) / wall.Seconds(), FDs: b.fds}
}

// foreign: an idle window (the observers' baseline), then churn only in
// networks no observer is in. An observer that follows only its own
// networks receives nothing more than in the idle window.
func (p *simPoint) foreign() bool {
	t := p.t
	s0 := p.snapshot()
	time.Sleep(max(p.o.Foreign/4, 3*time.Second))
	s1 := p.snapshot()
	res, err := p.sim.churn(sim.ChurnRequest{Rate: p.o.Rate, Seconds: p.o.Foreign.Seconds(), VNIs: p.plan.VNIs(p.plan.Foreign()), Tag: "foreign"})
	if err != nil {
		t.Fatal(err)
	}
	s2 := p.snapshot()
	idle, wall := s1.at.Sub(s0.at), s2.at.Sub(s1.at)
	writes := res.Starts + res.Stops
	for i := range p.obs {
		r := &p.res.Observers[i]
		r.CPUIdle = cores(s1.obs[i].cpu-s0.obs[i].cpu, idle)
		r.CPUForeign = cores(s2.obs[i].cpu-s1.obs[i].cpu, wall)
		r.ForeignWrites = writes
		idleRate := float64(s1.rx[i]-s0.rx[i]) / idle.Seconds()
		extra := float64(s2.rx[i]-s1.rx[i]) - idleRate*wall.Seconds()
		r.ForeignBytesPerWrite = max(extra, 0) / float64(max(writes, 1))
		t.Logf("%s: foreign churn (%d writes): %.3f cores (idle %.3f), %.0f bytes received per write",
			p.obs[i].name, writes, r.CPUForeign, r.CPUIdle, r.ForeignBytesPerWrite)
	}
	p.res.Etcd.ForeignEventsPerWrite = (s2.etcd.events - s1.etcd.events) / float64(max(writes, 1))
	if res.Pending > 0 {
		return p.endEarly("etcd did not keep up with the foreign churn: %d writes still not in etcd (%s)", res.Pending, res.Unsettled)
	}
	return true
}

// markerCount is how many endpoints are written per network to tell when
// an observer is current again.
const markerCount = 3

// markers writes markerCount endpoints in each observer's first network
// and returns their MACs by observer.
func (p *simPoint) markers(tag string) [][]string {
	byVNI := map[uint32][]string{}
	out := make([][]string, len(p.obs))
	for i, ob := range p.obs {
		vni := ob.nets[0].VNI
		if _, ok := byVNI[vni]; !ok {
			res, err := p.sim.add(sim.AddRequest{VNI: vni, Count: min(markerCount, p.hostsIn(vni)), Tag: tag})
			if err != nil {
				p.t.Fatal(err)
			}
			byVNI[vni] = res.MACs
		}
		out[i] = byVNI[vni]
	}
	return out
}

// hostsIn is how many synthetic hosts are members of vni.
func (p *simPoint) hostsIn(vni uint32) int {
	n := 0
	for h := range p.plan.Hosts {
		for _, vn := range p.plan.VNIs(p.plan.HostNets(h)) {
			if vn == vni {
				n++
			}
		}
	}
	return n
}

// relistWait bounds the wait for an observer to be current again.
const relistWait = 3 * time.Minute

// waitMarkers returns when the last of macs was programmed in ob's kernel.
func waitMarkers(ob *observer, macs []string) (time.Time, error) {
	deadline := time.Now().Add(relistWait)
	for {
		var last time.Time
		missing := 0
		for _, mac := range macs {
			if at, ok := ob.mon.added(mac); ok {
				last = later(last, at)
			} else {
				missing++
			}
		}
		if missing == 0 {
			return last, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s: %d of %d markers not programmed within %v", ob.name, missing, len(macs), relistWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logMissed says, for a few added endpoints the observer never had both
// entries of, what its kernel did show and when the endpoint went again.
func logMissed(t testing.TB, ob *observer, recs []sim.Record) {
	vnis, shown := vniSet(ob.nets), 0
	for _, rec := range recs {
		if rec.Op != sim.OpAdd || !vnis[rec.VNI] || shown == 3 {
			continue
		}
		if _, ok := ob.mon.added(rec.MAC); ok {
			continue
		}
		shown++
		gone := "never withdrawn"
		for _, r2 := range recs {
			if r2.MAC == rec.MAC && r2.Op == sim.OpDel {
				gone = fmt.Sprintf("withdrawn %v after its commit", time.Duration(r2.Committed-rec.Committed))
			}
		}
		fdb, neigh := ob.mon.seenAdds(rec.MAC)
		t.Logf("%s: missed %s (host %s, vxlan.id %d): FDB add seen %v, neighbour add seen %v; %s",
			ob.name, rec.MAC, rec.Host, rec.VNI, fdb, neigh, gone)
	}
}
