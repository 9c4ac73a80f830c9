// Package bridge creates and removes the Linux bridges and veth pairs of
// vxbridge networks through netlink. types.go, validate.go and addrs.go hold
// the pure types and helpers; the netlink and sysctl side effects live in the
// _linux.go files, whose design notes open bridge_linux.go.
package bridge

import (
	"net"
	"net/netip"
)

// BridgeConfig is the desired state of one network's bridge.
type BridgeConfig struct {
	Name string
	// Alias marks ownership (IFLA_IFALIAS), e.g. "vxbridge:net:<id>". An
	// existing link with another alias is not vxbridge's and is refused.
	Alias string
	MTU   int            // 0: leave the kernel default
	Addrs []netip.Prefix // gateway addresses, v4 and v6
}

// VethConfig is the desired state of one endpoint's veth pair.
type VethConfig struct {
	HostName string // stays in the host namespace, enslaved to Bridge
	PeerName string // handed to docker, which moves it into the container
	Bridge   string
	Alias    string // set on the host end, e.g. "vxbridge:ep:<id>"
	MTU      int
	MAC      net.HardwareAddr // set on the peer (container) end
	Isolated bool             // bridge port isolation (icc=false)
	// Hairpin lets the bridge send a frame back out of the port it came
	// in by: with br_netfilter, a container's packet to its own published
	// port is DNAT'ed to itself and bridged back (docker sets it too when
	// its userland proxy is off).
	Hairpin bool
	// PeerNS, when not 0, is an open handle (file descriptor) of the
	// namespace the peer end is created in; 0: the Manager's own. A
	// network with a namespace of its own keeps the host end there, on its
	// bridge, and hands docker the peer in docker's namespace.
	PeerNS int
	// PeerBuilding creates the peer in netdev.BuildGroup too, for a peer
	// that is configured afterwards (EnsureGateway) and must be recognisable
	// as vxbridge's, half-built, until then. Only when AddVeth creates the
	// pair.
	PeerBuilding bool
}

// LinkInfo describes an existing link.
type LinkInfo struct {
	Name   string
	Alias  string
	Kind   string // "bridge", "veth", ...
	Master string // name of the bridge it is enslaved to, "" if none
	MTU    int
	MAC    string // its hardware address, as net.HardwareAddr prints it
}
