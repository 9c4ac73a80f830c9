package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
)

// The VXLAN port rule.
//
// A VXLAN device takes every UDP datagram to its port that carries its VNI,
// from any source: learning off decides what is sent, not what is taken. So
// anyone who can reach the port, and guesses a VNI and a container's MAC
// (it follows the container's address), delivers frames into a container.
// The rule drops UDP to the VXLAN port from any source that is not the VTEP
// of a live peer of this host's cross-host networks:
//
//	filter INPUT (first rule) -> VXBRIDGE-INPUT
//	  -p udp --dport <port> -m set ! --match-set vxbridge-vtep4 src -j DROP
//
// The VTEPs are a kernel set (ipset hash:ip, one per family; in nftables
// mode a set of vxbridge's own table, as nf_tables cannot look up an
// ipset), so the cost of a packet does not grow with the number of peers
// and a peer coming or going changes one set entry, not the rules. The rule
// lives in the host's namespace, where the VXLAN devices' sockets are
// (docs/datapath-netns.md).
// Peers come from package peers' member records: what the firewall lets in
// is what the FDB sends to.

// ChainInput holds the VXLAN port rule; the first rule of INPUT jumps to it.
const ChainInput = "VXBRIDGE-INPUT"

// VTEP set names, one per family.
const (
	VTEPSet4 = "vxbridge-vtep4"
	VTEPSet6 = "vxbridge-vtep6"
)

// guardTag is the comment of the VXLAN port rule. It is not CommentPrefix
// and an id: the rule belongs to no network.
const guardTag = "vxbridge-vxlan-port"

var guardChain = chainRef{tableFilter, ChainInput}

var inputJump = ruleLine("INPUT", []string{"-j", ChainInput})

// VXLANGuard is the VXLAN port rule's desired state: UDP to Port is taken
// only from VTEPs. Port 0: no rule.
type VXLANGuard struct {
	Port  int
	VTEPs []netip.Addr
}

// vteps are the guard's VTEPs of one family.
func (g VXLANGuard) vteps(ipv6 bool) []netip.Addr {
	var out []netip.Addr
	for _, v := range g.VTEPs {
		if v = v.Unmap(); v.IsValid() && v.Is6() == ipv6 && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func vtepSet(ipv6 bool) string {
	if ipv6 {
		return VTEPSet6
	}
	return VTEPSet4
}

// guardRules is what VXBRIDGE-INPUT holds for port in one family.
func guardRules(port int, ipv6 bool) []string {
	return []string{ruleLine(ChainInput, []string{"-p", "udp", "-m", "udp", "--dport", strconv.Itoa(port),
		"-m", "set", "!", "--match-set", vtepSet(ipv6), "src", "-m", "comment", "--comment", guardTag, "-j", "DROP"})}
}

// guardWant is what one sync wants of the guard in one family: nil leaves
// it as it is (not known yet); lines nil removes it.
type guardWant struct {
	lines []string
}

// planGuard takes VXBRIDGE-INPUT and its jump to what want asks: the chain
// holding exactly its lines and one jump, first in INPUT; or neither.
func planGuard(s *restoreScript, st familyState, want *guardWant) {
	if want == nil {
		return
	}
	jumps := countOf(st.rules(chainRef{tableFilter, "INPUT"}), inputJump)
	if want.lines == nil {
		if !st.exists(guardChain) {
			return
		}
		for range jumps {
			s.add(tableFilter, deleteLine(inputJump))
		}
		s.add(tableFilter, ":"+ChainInput+" - [0:0]", "-X "+ChainInput)
		return
	}
	if !st.exists(guardChain) || !slices.Equal(st.rules(guardChain), want.lines) {
		s.add(tableFilter, ":"+ChainInput+" - [0:0]")
		s.add(tableFilter, want.lines...)
	}
	if input := st.rules(chainRef{tableFilter, "INPUT"}); jumps != 1 || input[0] != inputJump {
		for range jumps {
			s.add(tableFilter, deleteLine(inputJump))
		}
		s.add(tableFilter, insertLine(inputJump, 1))
	}
}

// SetVXLANGuard makes the VXLAN port rule g: its VTEP sets first, then
// (when the port is new) the rule; Port 0 removes both. Every later sync
// keeps the rule, and Reconcile repairs the sets (and makes them, and then
// the rule, if this failed). Until the first call the rule and sets are
// left as they are: after a restart, a previous run's peers stay allowed
// until this run knows its own.
func (fw *Firewall) SetVXLANGuard(g VXLANGuard) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	g.VTEPs = slices.Clone(g.VTEPs)
	fw.guard = &g
	if g.Port == 0 {
		fw.guardSets, fw.guardPort = false, 0
		if err := fw.syncGuardRules(); err != nil {
			return err
		}
		return fw.destroyVTEPSets() // after the rules that used them
	}
	if err := fw.repairVTEPSets(); err != nil {
		return err
	}
	if fw.guardPort == g.Port {
		return nil // the rule is in place: only the VTEPs changed
	}
	if err := fw.syncGuardRules(); err != nil {
		return err
	}
	fw.guardPort = g.Port
	return nil
}

// syncGuardRules applies the guard (and the jumps) in each usable family.
// fw.mu held.
func (fw *Firewall) syncGuardRules() error {
	for _, f := range fw.families {
		if f.err != nil {
			continue
		}
		if err := fw.syncFamily(f, syncRequest{jumpsOnly: true, guard: fw.guardWant(f.ipv6)}); err != nil {
			return fmt.Errorf("vxlan port rule: %w", err)
		}
	}
	return nil
}

// guardWant is what a sync of one family wants of the guard. fw.mu held.
func (fw *Firewall) guardWant(ipv6 bool) *guardWant {
	switch {
	case fw.guard == nil:
		return nil
	case fw.guard.Port == 0:
		return &guardWant{}
	case !fw.guardSets:
		return nil
	}
	return &guardWant{lines: guardRules(fw.guard.Port, ipv6)}
}

// repairVTEPSets makes the sets hold the guard's VTEPs (someone may have
// flushed them, or they could not be made before); until they can be, the
// rule is left as it is. fw.mu held.
func (fw *Firewall) repairVTEPSets() error {
	if fw.guard == nil || fw.guard.Port == 0 {
		return nil
	}
	err := fw.ensureVTEPSets(*fw.guard)
	if fw.guardSets = err == nil; err != nil {
		fw.guardPort = 0
		return fmt.Errorf("vxlan port rule: %w", err)
	}
	return nil
}
