package ports

// Docker's port bindings and the mappings they ask for, before any host port
// is chosen. All pure.

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/vxbridge/vxbridge/store"
)

// OptionKey holds docker's port bindings in the options of
// ProgramExternalConnectivity (and of CreateEndpoint, unused here). -P
// arrives as bindings without a host port, so the exposed-ports key that
// comes along is not needed.
const OptionKey = "com.docker.network.portmap"

// Binding is one element of docker's portmap (libnetwork's
// types.PortBinding as JSON).
type Binding struct {
	Proto       uint8 // 6 tcp, 17 udp, 132 sctp
	IP          string
	Port        uint16
	HostIP      string
	HostPort    uint16
	HostPortEnd uint16
}

var protoNames = map[uint8]string{6: "tcp", 17: "udp", 132: "sctp"}

// ParseBindings reads docker's port bindings from an option map; a refusal
// is ErrRefused.
func ParseBindings(opts map[string]interface{}) ([]Binding, error) {
	raw, ok := opts[OptionKey]
	if !ok || raw == nil {
		return nil, nil
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, refusef("option %s: %v", OptionKey, err)
	}
	var binds []Binding
	if err := json.Unmarshal(b, &binds); err != nil {
		return nil, refusef("option %s is not a list of port bindings: %v", OptionKey, err)
	}
	for _, pb := range binds {
		if err := pb.validate(); err != nil {
			return nil, err
		}
	}
	return binds, nil
}

func (pb Binding) validate() error {
	switch {
	case protoNames[pb.Proto] == "":
		return refusef("published port %d: protocol number %d is not tcp (6), udp (17) or sctp (132)", pb.Port, pb.Proto)
	case pb.Port == 0:
		return refusef("published port: container port 0")
	case pb.HostPortEnd != 0 && (pb.HostPort == 0 || pb.HostPortEnd < pb.HostPort):
		return refusef("published port %d/%s: host port range %d-%d is not low to high", pb.Port, protoNames[pb.Proto], pb.HostPort, pb.HostPortEnd)
	}
	if pb.HostIP != "" {
		a, err := netip.ParseAddr(pb.HostIP)
		if err != nil || a.Zone() != "" {
			return refusef("published port %d/%s: host address %q is not an IP address", pb.Port, protoNames[pb.Proto], pb.HostIP)
		}
	}
	return nil
}

// Want is one mapping a binding asks for, before its host port is chosen.
// Wants of one binding (group) get the same host port.
type Want struct {
	group     int
	proto     string
	hostIP    netip.Addr // unspecified: every address of its family
	lo, hi    uint16     // host port range; 0, 0: ephemeral
	container netip.AddrPort
}

func (w Want) mapping(port uint16) store.PortMapping {
	return store.PortMapping{Proto: w.proto, HostIP: w.hostIP, HostPort: port,
		ContainerIP: w.container.Addr(), ContainerPort: w.container.Port()}
}

// hostRange is how errors name the host side: 0.0.0.0:8080, [::]:8080-8090.
func (w Want) hostRange() string {
	s := netip.AddrPortFrom(w.hostIP, w.lo).String()
	if w.hi > w.lo {
		s += fmt.Sprintf("-%d", w.hi)
	}
	return s
}

// Expand turns docker's bindings into the mappings endpoint ep of network n
// needs (see the package comment); ipv6 says whether the host can listen
// on IPv6. A refusal is ErrRefused.
func Expand(binds []Binding, n *store.Network, ep *store.Endpoint, ipv6 bool) ([]Want, error) {
	c4, c6 := ep.IPv4.Addr(), ep.IPv6.Addr()
	def := n.HostBindingIPv4
	if !def.IsValid() {
		def = netip.IPv4Unspecified()
	}
	var wants []Want
	for i, pb := range binds {
		proto := protoNames[pb.Proto]
		base := Want{group: i, proto: proto, lo: pb.HostPort, hi: max(pb.HostPort, pb.HostPortEnd)}
		add := func(host, container netip.Addr) {
			w := base
			w.hostIP, w.container = host, netip.AddrPortFrom(container, pb.Port)
			wants = append(wants, w)
		}
		// An IPv6 host port serves a container without IPv6 through the proxy.
		v6Target := c6
		if !v6Target.IsValid() {
			v6Target = c4
		}
		host, _ := netip.ParseAddr(pb.HostIP) // validated
		host = host.Unmap()
		switch {
		case !host.IsValid():
			if c4.IsValid() {
				add(def, c4)
			}
			if def.IsUnspecified() && ipv6 {
				add(netip.IPv6Unspecified(), v6Target)
			}
			if len(wants) == 0 || wants[len(wants)-1].group != i {
				return nil, refusef("cannot publish %d/%s on %s: the container has no IPv4 address on this network (set a host address with -p)",
					pb.Port, proto, def)
			}
		case host.Is4():
			if !c4.IsValid() {
				return nil, refusef("cannot publish %d/%s on %s: the container has no IPv4 address on this network", pb.Port, proto, host)
			}
			add(host, c4)
		default:
			if !ipv6 {
				return nil, refusef("cannot publish %d/%s on %s: IPv6 is disabled on this host", pb.Port, proto, host)
			}
			add(host, v6Target)
		}
	}
	return wants, nil
}

// Satisfied says whether have (an endpoint's stored mappings) is what wants
// would give, so a replayed ProgramExternalConnectivity answers the same.
func Satisfied(have []store.PortMapping, wants []Want) bool {
	if len(have) != len(wants) {
		return false
	}
	used := make([]bool, len(have))
	for _, w := range wants {
		found := false
		for i, m := range have {
			if used[i] || m.Proto != w.proto || m.HostIP != w.hostIP ||
				netip.AddrPortFrom(m.ContainerIP, m.ContainerPort) != w.container ||
				w.lo != 0 && (m.HostPort < w.lo || m.HostPort > w.hi) {
				continue
			}
			used[i], found = true, true
			break
		}
		if !found {
			return false
		}
	}
	return true
}

// overlaps says whether two mappings would claim the same host socket: one
// protocol and port, one family, and the same address or a wildcard.
func overlaps(a, b store.PortMapping) bool {
	return a.Proto == b.Proto && a.HostPort == b.HostPort && a.HostIP.Is4() == b.HostIP.Is4() &&
		(a.HostIP == b.HostIP || a.HostIP.IsUnspecified() || b.HostIP.IsUnspecified())
}
