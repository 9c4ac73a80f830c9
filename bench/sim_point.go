package bench

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/bench/result"
	"github.com/vxbridge/vxbridge/bench/sim"
	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// simPoint is one point of figure 6: an underlay namespace with etcd and
// the synthetic hosts, and the observers, all gone when its subtest ends.
type simPoint struct {
	t    *testing.T
	o    SimOptions
	d    simDesign
	plan sim.Plan
	ul   *testbed.Underlay
	etcd *simEtcd
	sim  *simProc
	obs  []*observer
	res  result.SimPoint
	// churned is the churn phase's writes, for the first-packet probes.
	churned []sim.Record
}

func newSimPoint(t *testing.T, o SimOptions, d simDesign, shape string, hosts, members int) *simPoint {
	sh, err := sim.ParseShape(shape)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := sim.NewPlan(sh, hosts, o.PerHost, o.Observers)
	if err != nil {
		t.Fatal(err)
	}
	return &simPoint{t: t, o: o, d: d, plan: plan,
		res: result.SimPoint{Design: d.Name, Shape: shape, Hosts: hosts, EtcdNodes: members}}
}

// run measures the phases in order; each leaves the cluster settled.
func (p *simPoint) run() {
	if !p.setUp() {
		return
	}
	p.quiet()
	if !p.churn() {
		return
	}
	if len(p.plan.Foreign()) > 0 && !p.foreign() {
		return
	}
	if p.d.onDemand {
		p.firstPackets(p.churned) // re-lists are not seen in its tables
		return
	}
	p.afterRestart()
	p.afterCompaction()
	p.firstPackets(p.churned)
}

// limit records that the point stopped at the machine's limit.
func (p *simPoint) limit(format string, a ...any) bool {
	p.res.Limit = fmt.Sprintf(format, a...)
	p.t.Logf("limit: %s", p.res.Limit)
	return false
}

// endEarly records that the point ends after what it measured so far.
func (p *simPoint) endEarly(format string, a ...any) bool {
	p.res.Ended = fmt.Sprintf(format, a...)
	p.t.Logf("ended early: %s", p.res.Ended)
	return false
}

// Waits that grow with the point's size: bringing the synthetic hosts up,
// and an observer programming its remote endpoints.
func populateWait(hosts int) time.Duration {
	return 2*time.Minute + time.Duration(hosts)*300*time.Millisecond
}
func syncWait(remote int) time.Duration {
	return 2*time.Minute + time.Duration(remote)*10*time.Millisecond
}

func (p *simPoint) setUp() bool {
	t := p.t
	p.ul = testbed.NewUnderlay(t)
	p.etcd = startEtcd(t, p.ul.NetNS(), p.ul.IP, p.res.EtcdNodes, p.o.EtcdDir)
	p.sim = startSimhosts(t, p.ul.NetNS(), simArgs{bin: p.d.simhosts, etcd: p.etcd.URLs(), plan: p.plan,
		watchers: p.o.Watchers, policy: p.o.Policy, seed: 1, ttl: cluster.DefaultTTL, logLevel: "error", dir: t.TempDir()})
	begin := time.Now()
	st, err := p.sim.waitReady(populateWait(p.plan.Hosts))
	if err != nil {
		return p.limit("%d synthetic hosts not up within %v: %v", p.plan.Hosts, populateWait(p.plan.Hosts), err)
	}
	p.res.PopulateSeconds = time.Since(begin).Seconds()
	for _, n := range st.Endpoints {
		p.res.Endpoints += n
	}
	t.Logf("%d synthetic hosts, %d endpoints up in %.1f s", st.Hosts, p.res.Endpoints, p.res.PopulateSeconds)
	return p.joinObservers()
}

// joinObservers starts the observers, creates their networks and waits
// until each has programmed every remote endpoint.
func (p *simPoint) joinObservers() bool {
	t := p.t
	p.res.Observers = make([]result.SimObserver, p.o.Observers)
	starts := make([]time.Time, p.o.Observers)
	for i := range p.o.Observers {
		ob := newObserver(t, p.ul, p.d.plugin, p.etcd.URLs(), i, p.d.args...)
		p.obs = append(p.obs, ob)
		r := &p.res.Observers[i]
		r.Name, starts[i] = ob.name, time.Now()
		for _, k := range p.plan.ObserverNets(i) {
			r.CreateNetworkMs += ms(ob.join(t, p.plan.Nets[k], p.o.OwnPerNet))
		}
		r.Networks = len(ob.nets)
	}
	st, err := p.sim.status()
	if err != nil {
		t.Fatal(err)
	}
	for i, ob := range p.obs {
		r := &p.res.Observers[i]
		r.Remote = p.expectedRemote(i, st)
		wait := ob.waitTables
		if p.d.onDemand {
			wait = ob.waitListed // nothing is programmed before a packet asks
		}
		at, err := wait(r.Remote, syncWait(r.Remote))
		if err != nil {
			r.InitialTimedOut = true
			return p.limit("%s did not program %d remote endpoints within %v: %v", ob.name, r.Remote, syncWait(r.Remote), err)
		}
		r.InitialSyncMs = ms(at.Sub(starts[i]))
		for _, n := range ob.nets {
			ob.mon.watch(t, n.nsPath)
		}
		t.Logf("%s: %d networks, %d remote endpoints programmed %.0f ms after its first CreateNetwork (CreateNetwork %.0f ms)",
			ob.name, r.Networks, r.Remote, r.InitialSyncMs, r.CreateNetworkMs)
	}
	return true
}

// expectedRemote is the endpoints of other hosts in observer i's networks:
// the synthetic hosts' and the other observers' own.
func (p *simPoint) expectedRemote(i int, st sim.Status) int {
	want := 0
	for _, n := range p.obs[i].nets {
		want += st.Endpoints[n.VNI]
		for j, other := range p.obs {
			for _, on := range other.nets {
				if j != i && on.VNI == n.VNI {
					want += len(on.own)
				}
			}
		}
	}
	return want
}

// settle waits until every observer holds what the cluster says it should
// (a slow observer's late entries count in the phase just ended).
func (p *simPoint) settle() {
	st, err := p.sim.status()
	if err != nil {
		p.t.Fatal(err)
	}
	for i, ob := range p.obs {
		want := p.expectedRemote(i, st)
		if _, err := ob.waitTables(want, syncWait(want)); err != nil {
			p.t.Logf("%s not settled: %v", ob.name, err)
		}
	}
}

// settleOn waits until each observer shows the last writes of recs in its
// networks: the last endpoint added (and kept) and the last withdrawn. An
// observer applies etcd's events in order, so then it has applied all of
// them. (Counting entries would not do: a churn replaces endpoints one for
// one, and the count stays right while the observer lags.)
// It returns the observers that did not within syncWait.
func (p *simPoint) settleOn(recs []sim.Record) (behind []string) {
	for _, ob := range p.obs {
		add, del, ok := lastWrites(recs, vniSet(ob.nets))
		if !ok {
			continue
		}
		ip, _ := netip.ParseAddr(del.IP)
		err := testbed.Poll(syncWait(len(recs)), func() error {
			_, added := ob.mon.added(add.MAC)
			_, gone := ob.mon.deleted(del.MAC, ip, time.Unix(0, del.Published))
			if !added || !gone {
				return fmt.Errorf("%s has not applied the last writes yet (added %v, withdrawn %v)", ob.name, added, gone)
			}
			return nil
		})
		if err != nil {
			p.t.Logf("%s not settled: %v", ob.name, err)
			behind = append(behind, ob.name)
		}
	}
	return behind
}

// lastWrites is the last addition in vnis whose endpoint was not withdrawn
// later, and the last withdrawal, by commit time.
func lastWrites(recs []sim.Record, vnis map[uint32]bool) (add, del sim.Record, ok bool) {
	withdrawn := map[string]bool{}
	var haveAdd, haveDel bool
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		if !vnis[r.VNI] {
			continue
		}
		switch {
		case r.Op == sim.OpDel:
			withdrawn[r.MAC] = true
			if !haveDel || r.Committed > del.Committed {
				del, haveDel = r, true
			}
		case !withdrawn[r.MAC] && (!haveAdd || r.Committed > add.Committed):
			add, haveAdd = r, true
		}
	}
	return add, del, haveAdd && haveDel
}
