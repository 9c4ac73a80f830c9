package firewall

// Published ports (docker run -p), per mapping of host address and port to
// container address and port, in each family where both sides are of that
// family:
//
//	nat VXBRIDGE-DNAT        DNAT host port -> container (jumped to from
//	                         PREROUTING and OUTPUT for local destinations)
//	filter VXBRIDGE-FORWARD  ACCEPT the DNAT'ed traffic into the bridge
//	nat VXBRIDGE-POSTROUTING MASQUERADE it when it comes from the network
//	                         itself (hairpin), so the reply goes back
//	                         through the host and is un-DNAT'ed
//
// Each chain still holds one verdict only, and no two mappings DNAT the same
// packet (the driver never publishes one host port twice), so the order of
// rules stays irrelevant. The DNAT chain exists only while it holds a rule:
// removing the last published port gives back the tables of before it.
//
// Loopback is never DNAT'ed: a packet leaving for a container with source
// 127.0.0.1 is a martian unless route_localnet is on, and route_localnet
// would let the containers reach the host's loopback services. So rules for
// all host addresses exclude 127.0.0.0/8 (::1), which also keeps a forged
// packet for 127.0.0.1 arriving from the network from being DNAT'ed into a
// container; the driver's proxy answers on loopback instead. Mappings whose
// host and container addresses differ in family (an IPv6 host port for a
// container without IPv6) are the proxy's alone too.
//
// The rules pass the isolation guards because those let ctstate DNAT
// through, and DOCKER-USER still sees the traffic first, since FORWARD jumps
// to it before our chain. Rules carry the tag "vxbridge:<network>:<endpoint>":
// EnsureNetwork and RemoveNetwork of a network leave them alone, Reconcile
// keeps exactly those of the endpoints it is given.

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// ChainDNAT holds the DNAT rules of published ports (nat table).
const ChainDNAT = "VXBRIDGE-DNAT"

// portTagSep separates network and endpoint id in a port rule's tag; ids
// never contain it.
const portTagSep = ":"

// The jumps into ChainDNAT. Loopback is excluded in the rules themselves
// (see above), so the same two lines serve both families.
var (
	preroutingDNATJump = ruleLine("PREROUTING", []string{"-m", "addrtype", "--dst-type", "LOCAL", "-j", ChainDNAT})
	outputDNATJump     = ruleLine("OUTPUT", []string{"-m", "addrtype", "--dst-type", "LOCAL", "-j", ChainDNAT})
)

// Protocols a port can be published for, by their iptables names.
var portProtos = []string{"tcp", "udp", "sctp"}

// Ports is what the firewall needs to know of one endpoint's published
// ports.
type Ports struct {
	// Owner is as Network's: the identity the rules' comments carry.
	Owner      string
	NetworkID  string
	EndpointID string
	Bridge     string
	// Subnets are the network's subnets: traffic from them to a published
	// port of the same network is masqueraded (hairpin).
	Subnets  []netip.Prefix
	Mappings []PortMapping
}

// PortMapping is one published port. An unspecified HostIP (0.0.0.0, ::)
// stands for every address of the host but loopback.
type PortMapping struct {
	Proto         string // "tcp", "udp" or "sctp"
	HostIP        netip.Addr
	HostPort      uint16
	ContainerIP   netip.Addr
	ContainerPort uint16
}

// kernelPath says whether the kernel DNATs this mapping; otherwise only the
// proxy serves it.
func (m PortMapping) kernelPath() bool {
	return m.HostIP.Is6() == m.ContainerIP.Is6() && !m.HostIP.IsLoopback()
}

// PortTag is the comment on the port rules of endpoint epID of network
// netID, made from the state file of identity owner.
func PortTag(owner, netID, epID string) string { return Tag(owner, netID+portTagSep+epID) }

// linePorts returns the network and endpoint a listed port rule belongs to.
func linePorts(line string) (netID, epID string, ok bool) {
	id, ok := lineNetwork(line)
	if !ok {
		return "", "", false
	}
	return strings.Cut(id, portTagSep)
}

// Validate refuses what would make a port rule wrong: ids the tag cannot
// carry, a bridge iptables would misread, an unknown protocol, port 0, an
// address that is not a plain address of the right kind.
func (p Ports) Validate() error {
	for _, id := range []string{p.NetworkID, p.EndpointID} {
		if err := validID(id); err != nil {
			return err
		}
	}
	if err := validBridge(p.Bridge); err != nil {
		return fmt.Errorf("%w: endpoint %s: %w", ErrInvalidNetwork, p.EndpointID, err)
	}
	for _, m := range p.Mappings {
		if err := m.validate(); err != nil {
			return fmt.Errorf("%w: endpoint %s: %w", ErrInvalidNetwork, p.EndpointID, err)
		}
	}
	return nil
}

func (m PortMapping) validate() error {
	switch {
	case !slices.Contains(portProtos, m.Proto):
		return fmt.Errorf("published port %v: protocol %q is not one of %s", m, m.Proto, strings.Join(portProtos, ", "))
	case m.HostPort == 0 || m.ContainerPort == 0:
		return fmt.Errorf("published port %v: port 0", m)
	case !m.HostIP.IsValid() || m.HostIP.Zone() != "" || m.HostIP.Is4In6():
		return fmt.Errorf("published port %v: host address %v is not a plain IP address", m, m.HostIP)
	case !m.ContainerIP.IsValid() || m.ContainerIP.IsUnspecified() || m.ContainerIP.Zone() != "" || m.ContainerIP.Is4In6():
		return fmt.Errorf("published port %v: container address %v is not a plain IP address", m, m.ContainerIP)
	}
	return nil
}

// PortRules returns the rules of p's mappings in both families.
func PortRules(p Ports) []Rule {
	tag := PortTag(p.Owner, p.NetworkID, p.EndpointID)
	var rules []Rule
	for _, m := range p.Mappings {
		if !m.kernelPath() {
			continue
		}
		s := ruleSet{ipv6: m.ContainerIP.Is6(), tag: tag}
		dport := []string{"-p", m.Proto, "-m", m.Proto, "--dport", strconv.Itoa(int(m.ContainerPort))}
		container := hostPrefix(m.ContainerIP)
		s.addDNAT(m)
		s.add(tableFilter, ChainForward, "ACCEPT", slices.Concat(
			[]string{"-d", container, "!", "-i", p.Bridge, "-o", p.Bridge}, dport,
			[]string{"-m", "conntrack", "--ctstate", "DNAT"})...)
		for _, sub := range p.Subnets {
			if sub.IsValid() && sub.Contains(m.ContainerIP) {
				s.add(tableNat, ChainPostrouting, "MASQUERADE", slices.Concat(
					[]string{"-s", sub.Masked().String(), "-d", container, "-o", p.Bridge}, dport,
					[]string{"-m", "conntrack", "--ctstate", "DNAT"})...)
			}
		}
		rules = append(rules, s.rules...)
	}
	return rules
}

// addDNAT adds m's DNAT rule. Its spec ends in the target's option, so it
// does not fit ruleSet.add.
func (s *ruleSet) addDNAT(m PortMapping) {
	var spec []string
	switch {
	case m.HostIP.IsUnspecified():
		spec = []string{"!", "-d", loopback(s.ipv6)}
	default:
		spec = []string{"-d", hostPrefix(m.HostIP)}
	}
	spec = append(spec, "-p", m.Proto, "-m", m.Proto, "--dport", strconv.Itoa(int(m.HostPort)),
		"-m", "comment", "--comment", s.tag,
		"-j", "DNAT", "--to-destination", netip.AddrPortFrom(m.ContainerIP, m.ContainerPort).String())
	s.rules = append(s.rules, Rule{IPv6: s.ipv6, Table: tableNat, Chain: ChainDNAT, Spec: spec})
}

func loopback(ipv6 bool) string {
	if ipv6 {
		return "::1/128"
	}
	return "127.0.0.0/8"
}

// hostPrefix is a as iptables prints a one-address match: 10.0.0.2/32.
func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// EnsurePorts installs the rules of p's mappings, creating the DNAT chain
// and its jumps if needed, and drops the rules of p's endpoint that p no
// longer lists. Running it again changes nothing.
func (fw *Firewall) EnsurePorts(p Ports) error {
	if err := p.Validate(); err != nil {
		return err
	}
	return fw.syncOwned(func() []Rule { p.Owner = fw.owner; return PortRules(p) }, fw.ownsEndpointPorts(p.NetworkID, p.EndpointID))
}

// RemovePorts deletes the rules of p's endpoint (the DNAT chain goes with
// the last of them), then the conntrack entries of the connections p's
// mappings DNAT'ed: a reused host port must not keep sending an existing
// flow (UDP above all, whose entries live as long as packets keep coming)
// to the old container.
func (fw *Firewall) RemovePorts(p Ports) error {
	if err := fw.syncOwned(nil, fw.ownsEndpointPorts(p.NetworkID, p.EndpointID)); err != nil {
		return err
	}
	// Also when the rules were gone already (flushed behind our back).
	return FlushConntrack(p.Mappings)
}

// dnatMappings decodes DNAT rules as addDNAT writes them (in iptables-save
// form) back into the mappings they implement; other lines are skipped.
func dnatMappings(lines []string) []PortMapping {
	var out []PortMapping
	for _, l := range lines {
		if m, ok := parseDNAT(l); ok {
			out = append(out, m)
		}
	}
	return out
}

func parseDNAT(line string) (PortMapping, bool) {
	var m PortMapping
	f := strings.Fields(line)
	negated := false
	for i := 0; i < len(f); i++ {
		arg := func() string {
			if i+1 < len(f) {
				i++
				return f[i]
			}
			return ""
		}
		switch f[i] {
		case "!":
			negated = true
			continue
		case "-d":
			p, err := netip.ParsePrefix(arg())
			if err != nil {
				return m, false
			}
			if negated { // "! -d <loopback>": every host address
				m.HostIP = netip.IPv4Unspecified()
				if p.Addr().Is6() {
					m.HostIP = netip.IPv6Unspecified()
				}
			} else {
				m.HostIP = p.Addr()
			}
		case "-p":
			m.Proto = arg()
		case "--dport":
			n, err := strconv.ParseUint(arg(), 10, 16)
			if err != nil {
				return m, false
			}
			m.HostPort = uint16(n)
		case "--to-destination":
			ap, err := netip.ParseAddrPort(arg())
			if err != nil {
				return m, false
			}
			m.ContainerIP, m.ContainerPort = ap.Addr(), ap.Port()
		}
		negated = false
	}
	ok := m.Proto != "" && m.HostPort != 0 && m.ContainerIP.IsValid() && m.HostIP.IsValid()
	return m, ok
}

// ownsEndpointPorts says which lines are the port rules of endpoint epID
// of network netID made by this firewall's owner.
func (fw *Firewall) ownsEndpointPorts(netID, epID string) func(string) bool {
	return func(line string) bool {
		n, e, ok := linePorts(line)
		return ok && n == netID && e == epID && fw.mine(line)
	}
}

// portsOfNetwork says whether a listed line is a port rule of network id.
func portsOfNetwork(line, id string) bool {
	n, _, ok := linePorts(line)
	return ok && n == id
}
