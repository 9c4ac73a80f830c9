package bridge

import (
	"net"
	"net/netip"
)

// Found is what the kernel shows of a link, enough to make a record for it
// again when the state file that made it is lost (the driver's adoption).
type Found struct {
	LinkInfo
	// Addrs are the link's own addresses of global scope: a bridge's or a
	// gateway link's are its network's gateways.
	Addrs []netip.Prefix
	// VNI is a VXLAN device's network identifier; 0 for other kinds.
	VNI uint32
	// Peer is a veth's other end; nil for other kinds, or when the kernel
	// does not say where it is.
	Peer *Peer
}

// Peer is the other end of a veth, wherever it is.
type Peer struct {
	Name string // its name where it is (docker renames it eth0, eth1...)
	MAC  net.HardwareAddr
	// Addrs are its addresses of global scope: a container's, once docker
	// has configured it.
	Addrs []netip.Prefix
	// Elsewhere: it is in another network namespace than the link (a
	// container's, or the host's for a network with a namespace of its own).
	Elsewhere bool
}
