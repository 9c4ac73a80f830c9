package peers

import (
	"context"
	"net/netip"
	"time"

	"github.com/vxbridge/vxbridge/vxlan"
)

// On-demand programming (Config.OnDemand). The kernel reports a miss when
// a container here sends to a MAC or asks for an address the VXLAN device
// has no entry for; the follower answers from the network's table (the
// same rules and the same owner as eager programming) with transient
// entries, which the kernel ages out once unused. Records that change
// update or remove only the entries the kernel holds. The first frame to a
// peer not yet programmed waits for the sender's ARP or ND retry (the
// request that missed is not answered): the price of the smaller tables,
// measured in BENCHMARKS.md (figure 6).

// installedSet is what the kernel holds of a network's entries.
type installedSet struct {
	fdb   map[string]bool
	neigh map[netip.Addr]bool
}

// only keeps of c the sets of entries the kernel holds and every delete,
// as transient writes, and forgets what c deletes.
func (s *installedSet) only(c vxlan.Changes) vxlan.Changes {
	s.init()
	out := vxlan.Changes{DelFDB: c.DelFDB, DelNeigh: c.DelNeigh, Transient: true}
	for _, e := range c.SetFDB {
		if s.fdb[e.MAC] {
			out.SetFDB = append(out.SetFDB, e)
		}
	}
	for _, e := range c.SetNeigh {
		if s.neigh[e.IP] {
			out.SetNeigh = append(out.SetNeigh, e)
		}
	}
	for _, e := range c.DelFDB {
		delete(s.fdb, e.MAC)
	}
	for _, e := range c.DelNeigh {
		delete(s.neigh, e.IP)
	}
	return out
}

// reset takes the kernel's entries as what it holds, keeping of plan (a
// full comparison) the corrections of those entries but no additions.
func (s *installedSet) reset(actual vxlan.Table, plan vxlan.Changes) vxlan.Changes {
	s.fdb, s.neigh = map[string]bool{}, map[netip.Addr]bool{}
	for _, e := range actual.FDB {
		s.fdb[e.MAC] = true
	}
	for _, e := range actual.Neigh {
		s.neigh[e.IP] = true
	}
	return s.only(plan)
}

// add notes entries written on a miss.
func (s *installedSet) add(c vxlan.Changes) {
	s.init()
	for _, e := range c.SetFDB {
		s.fdb[e.MAC] = true
	}
	for _, e := range c.SetNeigh {
		s.neigh[e.IP] = true
	}
}

func (s *installedSet) init() {
	if s.fdb == nil {
		s.fdb, s.neigh = map[string]bool{}, map[netip.Addr]bool{}
	}
}

// onMiss programs what the kernel asked for, if a record has it.
func (f *follower) onMiss(m vxlan.Miss) {
	c := vxlan.Changes{Transient: true}
	if m.IP.IsValid() {
		n, fdb, ok := f.tb.lookupIP(m.IP)
		if !ok {
			return
		}
		c.SetNeigh, c.SetFDB = []vxlan.Neigh{n}, []vxlan.FDB{fdb}
	} else {
		fdb, ok := f.tb.lookupMAC(m.MAC)
		if !ok {
			return
		}
		c.SetFDB = []vxlan.FDB{fdb}
	}
	if err := f.net.Kernel.Apply(f.net.Device, c); err != nil {
		f.fail(err)
		return
	}
	f.installed.add(c)
	f.misses++
}

// watchMisses (re)starts the goroutine that posts the device's misses to
// the worker: at start and whenever the network is attached again (its
// device may have been made again, with a new interface index).
func (f *follower) watchMisses() {
	w, ok := f.net.Kernel.(MissWatcher)
	if !f.m.cfg.OnDemand || !ok {
		return
	}
	if f.stopMisses != nil {
		f.stopMisses()
	}
	ctx, cancel := context.WithCancel(f.ctx)
	f.stopMisses = cancel
	dev := f.net.Device
	go func() {
		backoff := 100 * time.Millisecond
		for ctx.Err() == nil {
			err := w.WatchMisses(ctx, dev, func(m vxlan.Miss) { f.post(op{kind: opMiss, miss: m}) })
			if ctx.Err() != nil {
				return
			}
			f.m.log.Warn("cross-host: not hearing the device's misses; subscribing again", "vni", f.vni, "err", err, "in", backoff)
			// Misses were lost meanwhile: a peer asked for then is asked
			// for again by the sender's next retry.
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}()
}
