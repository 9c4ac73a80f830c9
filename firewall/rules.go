package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/vxbridge/vxbridge/ownership/mark"
)

// The chains vxbridge owns, in the filter and nat tables of both families.
const (
	ChainForward     = "VXBRIDGE-FORWARD"     // filter, jumped from FORWARD
	ChainIsolation   = "VXBRIDGE-ISOLATION"   // filter, first rule of ChainForward
	ChainPostrouting = "VXBRIDGE-POSTROUTING" // nat, jumped from POSTROUTING
	ChainNames       = "VXBRIDGE-DNS"         // nat, jumped from PREROUTING while it holds a rule
	ChainDockerGuard = "VXBRIDGE-DOCKER"      // mangle, jumped from FORWARD
)

// preroutingNamesJump sends every routed packet through the DNS redirects.
var preroutingNamesJump = ruleLine("PREROUTING", []string{"-j", ChainNames})

// CommentPrefix starts the comment on every network rule; the identity of
// the state file that made it and the network id follow
// (mark.Comment), so Reconcile can attribute each rule to its network and
// leave the rules of other state files alone.
const CommentPrefix = mark.Prefix

const (
	tableFilter = "filter"
	tableNat    = "nat"
	tableMangle = "mangle"
)

// dockerBridges are the names docker gives its own bridges; "br-+" is
// iptables' wildcard for its user networks (br-<12 hex of the id>). Traffic
// from a vxbridge network to them is dropped by the outbound guard, because
// the network's outbound ACCEPT would otherwise let it through.
var dockerBridges = []string{"docker0", "docker_gwbridge", "br-+"}

// ctNotReplyOrPublished is the ctstate list negated by the isolation guards:
// replies (and their ICMP errors) to connections opened from the allowed side
// pass, and so does DNAT'ed traffic, which only a published port produces, so
// port publishing adds ACCEPTs without touching isolation.
const ctNotReplyOrPublished = "RELATED,ESTABLISHED,DNAT"

// ErrInvalidNetwork classifies a Network the firewall refuses; match it with
// errors.Is.
var ErrInvalidNetwork = errors.New("invalid firewall network")

// Rule is one iptables rule of a network. Spec is written in the order
// `iptables -S` prints it, so Line is both what iptables-restore reads and
// what a listing shows: rules are compared as text.
type Rule struct {
	IPv6  bool
	Table string
	Chain string
	Spec  []string
}

// Line is the rule as `iptables -S` prints it: "-A CHAIN spec...".
func (r Rule) Line() string { return ruleLine(r.Chain, r.Spec) }

func ruleLine(chain string, spec []string) string {
	var b strings.Builder
	b.WriteString("-A ")
	b.WriteString(chain)
	for i, arg := range spec {
		b.WriteByte(' ')
		if i > 0 && spec[i-1] == "--comment" {
			arg = quote(arg) // iptables always prints comments quoted
		}
		b.WriteString(arg)
	}
	return b.String()
}

// quote is xtables' save quoting: double quotes, with " and \ escaped.
func quote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
}

// Tag is the comment that attributes a rule to network id, made from the
// state file of identity owner.
func Tag(owner, id string) string { return mark.Comment(owner, id) }

// Validate refuses what would make a rule wrong or ambiguous: an id the
// comment cannot carry, a bridge name iptables reads as a wildcard or that
// is one of docker's bridge names (the outbound guard would cut the network
// off from itself), an invalid subnet.
func (n Network) Validate() error {
	if err := validID(n.ID); err != nil {
		return err
	}
	if err := validBridge(n.Bridge); err != nil {
		return fmt.Errorf("%w: network %s: %w", ErrInvalidNetwork, n.ID, err)
	}
	for _, p := range n.Subnets {
		if !p.IsValid() {
			return fmt.Errorf("%w: network %s: invalid subnet %v", ErrInvalidNetwork, n.ID, p)
		}
	}
	if n.NamesPort < 0 || n.NamesPort > 65535 {
		return fmt.Errorf("%w: network %s: names port %d: want 1-65535, or 0 for none", ErrInvalidNetwork, n.ID, n.NamesPort)
	}
	return nil
}

func validID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("%w: network id %q: want 1 to 128 characters", ErrInvalidNetwork, id)
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.ContainsRune("-_.", c)) {
			return fmt.Errorf("%w: network id %q has the character %q", ErrInvalidNetwork, id, c)
		}
	}
	return nil
}

// ValidateBridgeName says whether name can be a vxbridge bridge as far as
// iptables is concerned: one interface name, not a wildcard, not docker's.
func ValidateBridgeName(name string) error { return validBridge(name) }

func validBridge(name string) error {
	switch {
	case name == "" || len(name) > 15:
		return fmt.Errorf("bridge name %q: want 1 to 15 bytes", name)
	case strings.ContainsAny(name, "+ \t\n\"\\") || name[0] == '!' || name[0] == '-':
		return fmt.Errorf("bridge name %q: iptables would not read it as one interface name", name)
	}
	for _, d := range dockerBridges {
		if d == name || strings.HasSuffix(d, "+") && strings.HasPrefix(name, strings.TrimSuffix(d, "+")) {
			return fmt.Errorf("bridge name %q is docker's (%s): choose another name", name, d)
		}
	}
	return nil
}

// subnets returns n's subnets of one family, masked and without duplicates.
func (n Network) subnets(ipv6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range n.Subnets {
		if p.IsValid() && p.Addr().Is4() != ipv6 && !slices.Contains(out, p.Masked()) {
			out = append(out, p.Masked())
		}
	}
	return out
}

// Rules returns the rules network n needs, v4 rules for its v4 subnets and
// v6 rules for its v6 subnets. Every chain holds rules of one verdict only
// (VXBRIDGE-ISOLATION drops, VXBRIDGE-FORWARD accepts, VXBRIDGE-POSTROUTING
// translates sources: a network's MASQUERADE matches "! -o b" and its SNAT
// "-o b", so no packet meets both), so their order never matters and
// reconciling is a set diff.
func Rules(n Network) []Rule {
	var rules []Rule
	for _, ipv6 := range []bool{false, true} {
		if subnets := n.subnets(ipv6); len(subnets) > 0 {
			rules = append(rules, familyRules(n, ipv6, subnets)...)
		}
	}
	return rules
}

// ruleSet collects the rules of one network in one family.
type ruleSet struct {
	ipv6  bool
	tag   string
	rules []Rule
}

func (s *ruleSet) add(table, chain, target string, match ...string) {
	s.addTarget(table, chain, []string{target}, match...)
}

// addTarget is add with a target that takes arguments.
func (s *ruleSet) addTarget(table, chain string, target []string, match ...string) {
	spec := slices.Concat(match, []string{"-m", "comment", "--comment", s.tag, "-j"}, target)
	s.rules = append(s.rules, Rule{IPv6: s.ipv6, Table: table, Chain: chain, Spec: spec})
}

func familyRules(n Network, ipv6 bool, subnets []netip.Prefix) []Rule {
	b := n.Bridge
	s := ruleSet{ipv6: ipv6, tag: Tag(n.Owner, n.ID)}
	if n.Internal {
		// Nothing leaves or enters, whatever its conntrack state.
		s.add(tableFilter, ChainIsolation, "DROP", "-i", b, "!", "-o", b)
		s.add(tableFilter, ChainIsolation, "DROP", "!", "-i", b, "-o", b)
	} else {
		// Inbound guard: no other network (vxbridge or docker) and no
		// outside host opens a connection into b.
		s.add(tableFilter, ChainIsolation, "DROP", "!", "-i", b, "-o", b,
			"-m", "conntrack", "!", "--ctstate", ctNotReplyOrPublished)
		// Outbound guard: b opens nothing into docker's bridges (vxbridge
		// bridges are covered by their own inbound guard).
		for _, d := range dockerBridges {
			s.add(tableFilter, ChainIsolation, "DROP", "-i", b, "-o", d,
				"-m", "conntrack", "!", "--ctstate", ctNotReplyOrPublished)
		}
	}
	// The docker guard: no new connection from docker's bridges into b,
	// in mangle FORWARD, which runs before filter FORWARD and where docker
	// puts nothing. The inbound guard above drops the same traffic, but
	// only while our FORWARD jump sits above docker's: each dockerd start
	// puts docker's jumps (DOCKER-FORWARD and its `-i docker0 -j ACCEPT`)
	// back above ours until the reconcile moves ours up again.
	for _, d := range dockerBridges {
		s.add(tableMangle, ChainDockerGuard, "DROP", "-i", d, "-o", b,
			"-m", "conntrack", "!", "--ctstate", ctNotReplyOrPublished)
	}
	if !n.ICC {
		// Port isolation stops container-to-container frames at L2; this
		// stops the same traffic routed back into b through the gateway.
		s.add(tableFilter, ChainIsolation, "DROP", "-i", b, "-o", b, "-m", "physdev", "!", "--physdev-is-bridged")
	}
	// Frames between b's ports cross FORWARD too once br_netfilter is loaded.
	s.add(tableFilter, ChainForward, "ACCEPT", "-i", b, "-o", b)
	if n.Internal {
		return s.rules
	}
	s.add(tableFilter, ChainForward, "ACCEPT", "-i", b, "!", "-o", b)
	s.add(tableFilter, ChainForward, "ACCEPT", "-o", b, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED")
	if n.Masquerade {
		for _, p := range subnets {
			s.add(tableNat, ChainPostrouting, "MASQUERADE", "-s", p.String(), "!", "-o", b)
		}
	}
	s.namesRules(n, subnets[0])
	s.hostRules(n, ipv6)
	return s.rules
}

// hostRules make the host's own traffic into the network (ping, a
// monitoring agent, the port relay) leave from the host's own address of
// the network instead of the gateway every host shares. Only packets from
// the gateway address: what the host sends from another of its addresses
// (a connection to a published port on the host's own address) keeps it.
func (s *ruleSet) hostRules(n Network, ipv6 bool) {
	for _, a := range n.HostAddrs {
		for _, g := range n.Gateways {
			if a.IsValid() && g.IsValid() && a.Is6() == ipv6 && g.Is6() == ipv6 {
				s.addTarget(tableNat, ChainPostrouting, []string{"SNAT", "--to-source", a.String()},
					"-s", netip.PrefixFrom(g, g.BitLen()).String(), "-o", n.Bridge)
			}
		}
	}
}

// namesRules redirect the DNS queries b's containers send to resolvers
// outside the network (docker's embedded DNS forwards the names it does
// not know from the container's namespace) to vxbridge's DNS server on
// n.NamesPort, at the address of b that received them (REDIRECT: the
// gateway). Queries to the network's own subnet (a DNS server among its
// containers) are left alone. Internal networks have none: their queries
// have nowhere to go, and vxbridge must not carry them out.
func (s *ruleSet) namesRules(n Network, subnet netip.Prefix) {
	if n.NamesPort == 0 || n.Internal {
		return
	}
	for _, proto := range []string{"udp", "tcp"} {
		s.addTarget(tableNat, ChainNames, []string{"REDIRECT", "--to-ports", strconv.Itoa(n.NamesPort)},
			"!", "-d", subnet.String(), "-i", n.Bridge, "-p", proto, "-m", proto, "--dport", "53")
	}
}

// lineNetwork returns the network id a listed rule is tagged with
// ("<network>:<endpoint>" for a published port's rule).
func lineNetwork(line string) (id string, ok bool) {
	_, id, ok = lineOwner(line)
	return id, ok
}

// lineOwner returns the identity of the state file a listed rule was made
// from ("" before identities) and the id it is tagged with.
func lineOwner(line string) (owner, id string, ok bool) {
	const marker = `--comment "`
	i := strings.Index(line, marker)
	if i < 0 {
		return "", "", false
	}
	rest := line[i+len(marker):]
	end := strings.IndexByte(rest, '"')
	if end < 0 {
		return "", "", false
	}
	return mark.ParseComment(rest[:end])
}
