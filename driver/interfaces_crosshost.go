package driver

import (
	"context"
	"net/netip"

	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/ipam"
	"github.com/vxbridge/vxbridge/peers"
	"github.com/vxbridge/vxbridge/vxlan"
)

// Cluster holds the cross-host state (package cluster, in etcd). Only
// ClaimNetwork waits for etcd; Publish, Withdraw, LeaveNetwork and Rejoin
// record what should be in etcd and return at once.
type Cluster interface {
	HostID() string
	// ClaimNetwork checks a cross-host network against the cluster (same
	// VNI with other subnets, or a subnet of another VNI, is
	// cluster.ErrConflict) and makes this host a member.
	ClaimNetwork(ctx context.Context, n cluster.Network) error
	LeaveNetwork(vni uint32)
	Rejoin(vni uint32)
	Publish(ep cluster.Endpoint)
	Withdraw(id string)
	// Connected says whether this host's records last reached etcd.
	Connected() (bool, string)
	// OldHosts lists live hosts of a version before records by network.
	OldHosts() []string
	// WatchStats counts the listings and watch events this host's network
	// watches received.
	WatchStats() (lists, events uint64)
}

// Peers follows the records of each cross-host network and programs its
// VXLAN device (package peers). Every method only queues work: no docker
// call waits for peer programming.
type Peers interface {
	Attach(n peers.Network)
	Detach(vni uint32)
	SetLocal(vni uint32, ips []netip.Addr, macs []string)
	Resync()
	Status() []peers.Status
	// MACTaken says whether another host's record of network vni has mac.
	MACTaken(vni uint32, mac string) bool
	// Conflicts counts the claims refused since the start.
	Conflicts() uint64
}

// VXLAN makes VXLAN devices and programs their peers (package vxlan).
// Every method is idempotent.
type VXLAN interface {
	EnsureDevice(d vxlan.Device) error
	DeleteDevice(name, alias string) error
	// Apply and Entries write and read the device's FDB and neighbour
	// entries (for package peers).
	Apply(name string, c vxlan.Changes) error
	Entries(name string) (vxlan.Table, error)
	EnsureNeighLimits(want int) (vxlan.NeighLimits, bool, error)
}

// AddressBlocks is the IPAM's cross-host side (ipam.BlockAllocators).
type AddressBlocks interface {
	// Holds says whether vxbridge's IPAM gave out the pool prefix.
	Holds(prefix netip.Prefix) bool
	// Prefetch leases an address block of the pool ahead of the first container.
	Prefetch(ctx context.Context, prefix netip.Prefix) error
	// ReleaseBlocks gives this host's blocks of the pool back to the cluster.
	ReleaseBlocks(ctx context.Context, prefix netip.Prefix) error
	// LostBlocks lists the blocks other hosts took while this host's lease
	// had lapsed, with this host's addresses still in them.
	LostBlocks() []ipam.LostBlock
}

// CrossHostConfig turns on cross-host networks (-o vxlan.id); without it
// (no --etcd-endpoints) such networks are refused.
type CrossHostConfig struct {
	Cluster Cluster
	VXLAN   VXLAN // in the host's namespace (neighbour limits; networks without a namespace)
	Blocks  AddressBlocks
	Peers   Peers
	// VTEP is this host's underlay address, on interface VTEPInterface
	// whose MTU is UnderlayMTU.
	VTEP          netip.Addr
	VTEPInterface string
	UnderlayMTU   int
	Port          int // VXLAN UDP port
	// OnDemand makes VXLAN devices report misses, for peers programmed on
	// demand (--peer-programming=on-demand).
	OnDemand      bool
	EtcdEndpoints []string // shown by status
	// Names seeks joined containers' names, published with their records
	// (package names); nil: none are. NamesPort is the port of vxbridge's
	// DNS server, where the firewall redirects the DNS queries of
	// cross-host networks (0: none).
	Names     NameLearner
	NamesPort int
	// HostAddrs gives this host an address of its own in each cross-host
	// network (hostreach.go); nil: hosts reach only their own containers.
	HostAddrs HostAddresses
}

// HostAddresses takes this host's own address in a cross-host network's
// subnet: from its own address blocks (so no container and no other host
// gets it), the same one again after a restart. It may wait for etcd.
type HostAddresses interface {
	HostAddress(ctx context.Context, pool netip.Prefix) (netip.Addr, error)
}

// NameLearner seeks the names of joined containers in their sandboxes
// (names.Learner). Learn and Forget return at once; found is called from
// another goroutine.
type NameLearner interface {
	Learn(endpointID, sandbox string, addr netip.Addr, found func(name, domain string))
	Forget(endpointID string)
}
