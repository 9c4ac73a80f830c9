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
// keeps what it had, and known peers stay reachable. Once the last network
// is detached the report says no network is followed: no VXLAN device is
// left to guard, and the rule can go with the networks' rules. (A start
// with no network reports nothing: what a previous run left stays until
// the first network is listed.)

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
	reported, wasFollowing := false, false
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.vtepKick:
		}
		all, following, complete := m.allVTEPs()
		if !complete || reported && slices.Equal(all, last) && following == wasFollowing {
			continue
		}
		m.cfg.OnVTEPs(all, following)
		last, wasFollowing, reported = all, following, true
	}
}

// allVTEPs is the union of the followed networks' VTEPs, sorted, and
// whether any network is followed; complete is false while a followed
// network has not been listed yet.
func (m *Manager) allVTEPs() (all []netip.Addr, following, complete bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	following = len(m.nets) > 0
	set := map[netip.Addr]bool{}
	for vni := range m.nets {
		vteps, listed := m.vteps[vni]
		if !listed {
			return nil, following, false
		}
		for _, v := range vteps {
			set[v] = true
		}
	}
	return slices.SortedFunc(maps.Keys(set), netip.Addr.Compare), following, true
}
