package driver

import (
	"context"
	"net/netip"

	"github.com/vxbridge/vxbridge/cluster"
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
	// Watch calls fn with the whole cluster view after every change until
	// ctx ends.
	Watch(ctx context.Context, fn func(cluster.View))
	// Connected says whether this host's records last reached etcd.
	Connected() (bool, string)
}

// VXLAN makes VXLAN devices and programs their peers (package vxlan).
// Every method is idempotent.
type VXLAN interface {
	EnsureDevice(d vxlan.Device) error
	DeleteDevice(name, alias string) error
	// Sync makes the device's FDB and neighbour entries equal t.
	Sync(name string, t vxlan.Table) (vxlan.Changes, error)
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
}

// CrossHostConfig turns on cross-host networks (-o vxlan.id); without it
// (no --etcd-endpoints) such networks are refused.
type CrossHostConfig struct {
	Cluster Cluster
	VXLAN   VXLAN
	Blocks  AddressBlocks
	// VTEP is this host's underlay address, on interface VTEPInterface
	// whose MTU is UnderlayMTU.
	VTEP          netip.Addr
	VTEPInterface string
	UnderlayMTU   int
	Port          int      // VXLAN UDP port
	EtcdEndpoints []string // shown by status
}
