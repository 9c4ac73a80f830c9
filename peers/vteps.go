package peers

import (
	"maps"
	"net/netip"
	"slices"
)

// The VTEPs this host takes VXLAN frames from. The firewall drops UDP to
// the VXLAN port from any other source (package firewall), so the list must
// hold every peer a network of this host programs, and nothing else: the
// usable VTEPs of the member hosts of every followed network, held
// departures included (their entries are still in the kernel).
//
// It is reported (Config.OnVTEPs) from one goroutine, so reports never
// overlap or arrive out of order, and only once every followed network has
// been listed: before that, after a restart with etcd away, the firewall
// keeps what it had, and known peers stay reachable.

// vteps are the usable VTEPs of the other member hosts, sorted.
func (t *table) vteps() []netip.Addr {
	set := map[netip.Addr]bool{}
	for host, m := range t.members {
		if v := m.VTEP.Unmap(); host != t.self && t.usableVTEP(v) {
			set[v] = true
		}
	}
	return slices.SortedFunc(maps.Keys(set), netip.Addr.Compare)
}

// noteVTEPs records network vni's member VTEPs (its follower has listed it)
// and wakes the reporter.
func (m *Manager) noteVTEPs(vni uint32, vteps []netip.Addr) {
	m.mu.Lock()
	if _, ok := m.nets[vni]; ok {
		m.vteps[vni] = vteps
	}
	m.mu.Unlock()
	m.kickVTEPs()
}

func (m *Manager) kickVTEPs() {
	select {
	case m.vtepKick <- struct{}{}:
	default:
	}
}

// reportVTEPs calls OnVTEPs whenever the VTEPs of all followed networks
// change, until the manager closes.
func (m *Manager) reportVTEPs() {
	defer close(m.vtepDone)
	var last []netip.Addr
	reported := false
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.vtepKick:
		}
		all, complete := m.allVTEPs()
		if !complete || reported && slices.Equal(all, last) {
			continue
		}
		m.cfg.OnVTEPs(all)
		last, reported = all, true
	}
}

// allVTEPs is the union of the followed networks' VTEPs, sorted; complete
// is false while a followed network has not been listed yet.
func (m *Manager) allVTEPs() (all []netip.Addr, complete bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	set := map[netip.Addr]bool{}
	for vni := range m.nets {
		vteps, listed := m.vteps[vni]
		if !listed {
			return nil, false
		}
		for _, v := range vteps {
			set[v] = true
		}
	}
	return slices.SortedFunc(maps.Keys(set), netip.Addr.Compare), true
}
