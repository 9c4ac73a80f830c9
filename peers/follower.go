package peers

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/vxlan"
)

// retryAfter is how soon a failed kernel write is retried with a resync.
const retryAfter = time.Second

type opKind uint8

const (
	opReset opKind = iota + 1
	opApply
	opLocal
	opResync
	opAttach
	opMiss
)

// op is one piece of work for a follower's worker.
type op struct {
	kind    opKind
	state   cluster.NetworkState
	changes []cluster.Change
	ips     []netip.Addr
	macs    []string
	net     Network
	miss    vxlan.Miss
}

// follower follows one network: the cluster's watch and the driver post
// ops, its worker applies them in order. Only the worker touches tb, net
// and the kernel.
type follower struct {
	m      *Manager
	vni    uint32
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	qmu   sync.Mutex
	queue []op
	wake  chan struct{}

	// worker-owned
	net    Network
	tb     *table
	listed bool // a listing arrived: the table speaks for the network
	synced bool // the kernel was compared with the table since listed
	dirty  bool // a kernel write failed: resync soon
	// installed are the entries the kernel holds, in on-demand mode (only
	// those are updated when records change).
	installed  installedSet
	stopMisses context.CancelFunc // ends the current miss watcher
	misses     uint64             // misses answered
	applied    uint64
	lastErr    string

	macMu sync.Mutex
	macs  map[string]int // MACs of other hosts' records, for MACTaken

	// forged are the network's records that are not as their hosts wrote
	// them (cluster.Change.Forged), by cluster.Change.Key; worker-owned.
	forged    map[string]string
	forgedGen uint64
	vtepGen   uint64 // the table's gen the last VTEP report was made at (0: none)

	smu         sync.Mutex
	st          Status // a copy of the worker's state, for Status
	stGen       uint64 // the table's gen st's lists were made at
	stForgedGen uint64 // forgedGen st's conflicts were made at

	subnets []netip.Prefix        // the network's, fixed for its id
	names   atomic.Pointer[Names] // the snapshot DNS answers read
	nGen    [2]uint64             // the table's gen and ngen names was made at
}

func newFollower(m *Manager, n Network) *follower {
	ctx, cancel := context.WithCancel(m.ctx)
	f := &follower{m: m, vni: n.VNI, ctx: ctx, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1),
		net: n, tb: newTable(tableConfig(m.cfg, n)), st: Status{VNI: n.VNI}, macs: map[string]int{}, subnets: n.Subnets,
		forged: map[string]string{}}
	f.tb.onMAC = f.noteMAC
	f.names.Store(&Names{VNI: n.VNI})
	return f
}

func tableConfig(c Config, n Network) config {
	return config{Self: c.Self, SelfVTEP: c.SelfVTEP, VTEPCIDRs: c.VTEPCIDRs, Subnets: n.Subnets, Gateways: n.Gateways}
}

// Reset and Apply make the follower the cluster watch's sink: they queue.
func (f *follower) Reset(s cluster.NetworkState) { f.post(op{kind: opReset, state: s}) }
func (f *follower) Apply(c []cluster.Change)     { f.post(op{kind: opApply, changes: c}) }

func (f *follower) post(o op) {
	f.qmu.Lock()
	f.queue = append(f.queue, o)
	f.qmu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *follower) take() []op {
	f.qmu.Lock()
	defer f.qmu.Unlock()
	q := f.queue
	f.queue = nil
	return q
}

// run is the worker. A follower of the same VNI detached before (prev)
// must have stopped first: it could otherwise write to this one's device.
func (f *follower) run(prev <-chan struct{}) {
	defer close(f.done)
	if prev != nil {
		select {
		case <-prev:
		case <-f.ctx.Done():
			return
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f.m.cfg.Source.FollowNetwork(f.ctx, f.vni, f) }()
	f.watchMisses()
	defer wg.Wait()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-f.wake:
			for _, o := range f.take() {
				if f.ctx.Err() != nil {
					return
				}
				f.do(o)
			}
		case <-retry.C:
			f.resync()
		}
		if f.dirty {
			retry.Reset(retryAfter)
		}
		f.publish()
	}
}

func (f *follower) do(o op) {
	switch o.kind {
	case opReset:
		d := f.tb.reset(o.state)
		f.resetForged(o.state.Forged)
		f.listed = true
		if !f.synced {
			f.resync() // the first listing: the kernel may hold a past run's entries
			return
		}
		f.write(d, "listing")
	case opApply:
		for _, ch := range o.changes {
			f.noteForged(ch.Key(), ch.Forged)
			f.write(f.tb.apply(ch), ch.Kind.String())
		}
		f.applied += uint64(len(o.changes))
	case opLocal:
		f.write(f.tb.setLocal(o.ips, o.macs), "local endpoints")
	case opResync:
		f.resync()
	case opAttach:
		f.net = o.net
		f.resync() // a device made again, or found in a namespace opened again
		f.watchMisses()
	case opMiss:
		f.onMiss(o.miss)
	}
}

// write applies a delta to the kernel; a failure makes the follower
// dirty: a resync compares the whole device soon.
func (f *follower) write(c vxlan.Changes, why string) {
	f.logConflicts()
	if f.m.cfg.OnDemand {
		c = f.installed.only(c)
	}
	if c.Empty() {
		return
	}
	if err := f.net.Kernel.Apply(f.net.Device, c); err != nil {
		f.fail(err)
		return
	}
	f.m.log.Debug("cross-host peers programmed", "vni", f.vni, "why", why,
		"fdb_set", len(c.SetFDB), "fdb_deleted", len(c.DelFDB), "neigh_set", len(c.SetNeigh), "neigh_deleted", len(c.DelNeigh))
	f.lastErr = ""
}

func (f *follower) fail(err error) {
	if !f.dirty {
		f.m.log.Warn("cross-host: programming peers failed; comparing the device with the records again shortly",
			"network", short(f.net.ID), "vni", f.vni, "err", err)
	}
	f.dirty = true
	f.lastErr = err.Error()
}

// resync compares the device with the table and repairs the difference.
// Before the first listing it changes nothing: after a restart with etcd
// down, the entries already in the kernel keep known peers reachable.
func (f *follower) resync() {
	if !f.listed {
		return
	}
	actual, err := f.net.Kernel.Entries(f.net.Device)
	if err != nil {
		f.fail(err)
		return
	}
	c := vxlan.Plan(f.tb.desired(), actual)
	if f.m.cfg.OnDemand {
		c = f.installed.reset(actual, c)
	}
	f.dirty, f.synced = false, true
	if c.Empty() {
		f.lastErr = ""
		return
	}
	if err := f.net.Kernel.Apply(f.net.Device, c); err != nil {
		f.fail(err)
		return
	}
	f.lastErr = ""
	f.m.log.Info("cross-host peers repaired: the device differed from the records", "network", short(f.net.ID), "vni", f.vni,
		"fdb_set", len(c.SetFDB), "fdb_deleted", len(c.DelFDB), "neigh_set", len(c.SetNeigh), "neigh_deleted", len(c.DelNeigh))
}

func (f *follower) logConflicts() {
	for _, c := range f.tb.newConf {
		f.m.log.Warn("cross-host: a record claims what another holds; the older claim keeps it",
			"vni", f.vni, "endpoint", c.Endpoint, "claims", c.What, "value", c.Value, "held_by", c.Holder)
		f.m.conflicts.Add(1)
	}
	f.tb.newConf = f.tb.newConf[:0]
}

// publish copies the worker's state for Status, and reports the network's
// neighbour entries.
func (f *follower) publish() {
	st := Status{VNI: f.vni, Listed: f.listed, Applied: f.applied, Misses: f.misses, LastError: f.lastErr}
	st.Members = len(f.tb.members)
	if _, self := f.tb.members[f.m.cfg.Self]; self {
		st.Members--
	}
	st.Endpoints = len(f.tb.recs) - len(f.tb.byHost[f.m.cfg.Self])
	st.FDB, st.Neigh = f.tb.nFDB, f.tb.nNeigh
	if f.m.cfg.OnDemand {
		st.FDB, st.Neigh = len(f.installed.fdb), len(f.installed.neigh)
	}
	f.smu.Lock()
	if f.stGen == f.tb.gen && f.stForgedGen == f.forgedGen {
		st.Conflicts, st.Peers = f.st.Conflicts, f.st.Peers
	} else {
		st.Conflicts, st.Peers = append(f.tb.conflicts(), f.forgedConflicts()...), f.tb.peers()
		f.stGen, f.stForgedGen = f.tb.gen, f.forgedGen
	}
	f.st = st
	f.smu.Unlock()
	f.m.noteNeighs(f.vni, st.Neigh)
	if gen := [2]uint64{f.tb.gen, f.tb.ngen}; gen != f.nGen {
		f.nGen = gen
		f.names.Store(f.tb.names(f.vni))
	}
	if f.listed && f.vtepGen != f.tb.gen {
		f.vtepGen = f.tb.gen
		f.m.noteVTEPs(f.vni, f.tb.vteps())
	}
}

func (f *follower) status() Status {
	f.smu.Lock()
	st := f.st
	f.smu.Unlock()
	st.Names = f.names.Load().Entries()
	return st
}

func short(id string) string { return id[:min(12, len(id))] }

// noteMAC counts a record's MAC in or out (called by the table).
func (f *follower) noteMAC(mac string, delta int) {
	f.macMu.Lock()
	defer f.macMu.Unlock()
	if f.macs[mac] += delta; f.macs[mac] <= 0 {
		delete(f.macs, mac)
	}
}
