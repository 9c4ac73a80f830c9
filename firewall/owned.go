package firewall

// Reading back what the rules say, for start-up: whose they are (the
// identity in their comments), and for networks and ports whose records were
// lost, what the rules still tell of them (driver's adoption).

import (
	"strings"
)

// OwnedRule is a listed rule of vxbridge's chains that carries a vxbridge
// comment.
type OwnedRule struct {
	Owner    string // identity of the state file that made it; "" before identities
	Network  string
	Endpoint string // a published port's rule; "" for a network's
	Tag      string // the comment: one per network, or per endpoint's ports, and owner
	Line     string // as `iptables -S` lists it
}

// OwnedRules lists the rules in vxbridge's chains of both families that
// carry a vxbridge comment, whoever's they are.
func (fw *Firewall) OwnedRules() ([]OwnedRule, error) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	var out []OwnedRule
	for _, f := range fw.families {
		if f.err != nil {
			continue
		}
		st, err := f.read()
		if err != nil {
			return nil, err
		}
		out = append(out, ownedRules(st)...)
	}
	return out, nil
}

// ownedRules picks the tagged rules of our chains out of a listing.
func ownedRules(st familyState) []OwnedRule {
	var out []OwnedRule
	for _, c := range ourChains {
		for _, l := range st.rules(c) {
			if r, ok := ownedRule(l); ok {
				out = append(out, r)
			}
		}
	}
	return out
}

// RuleOwner reads the vxbridge comment of a rule as iptables -S or
// iptables-save lists it; ok is false for a rule without one.
func RuleOwner(line string) (OwnedRule, bool) { return ownedRule(line) }

// ownedRule reads a listed line's vxbridge comment.
func ownedRule(line string) (OwnedRule, bool) {
	owner, id, ok := lineOwner(line)
	if !ok {
		return OwnedRule{}, false
	}
	net, ep, _ := strings.Cut(id, portTagSep)
	return OwnedRule{Owner: owner, Network: net, Endpoint: ep, Tag: Tag(owner, id), Line: line}, true
}

// Policy is what a network's rules say of its options.
type Policy struct {
	Internal, ICC, Masquerade bool
}

// ReadPolicy reads network id's options back from its rules (as Rules
// writes them); found is false when it has none. A network without rules
// of a family, or of any, reads as ICC on, as docker's default is.
func ReadPolicy(rules []OwnedRule, id string) (p Policy, found bool) {
	p.ICC = true
	for _, r := range rules {
		if r.Network != id || r.Endpoint != "" {
			continue
		}
		found = true
		f := strings.Fields(r.Line)
		switch {
		case strings.Contains(r.Line, " -j MASQUERADE"):
			p.Masquerade = true
		case strings.Contains(r.Line, "--physdev-is-bridged"):
			p.ICC = false
		case len(f) > 1 && f[1] == ChainIsolation && strings.HasSuffix(r.Line, " -j DROP") && !strings.Contains(r.Line, "--ctstate"):
			p.Internal = true
		}
	}
	return p, found
}

// ReadPorts reads endpoint epID's published ports back from its DNAT rules
// (both families).
func ReadPorts(rules []OwnedRule, epID string) []PortMapping {
	var lines []string
	for _, r := range rules {
		if r.Endpoint == epID {
			lines = append(lines, r.Line)
		}
	}
	return dnatMappings(lines)
}
