// Package store persists vxbridge's local state (networks, endpoints, IPAM
// pools and addresses) in a bbolt file. It knows nothing of the kernel or of
// the network lifecycle: it stores and returns records, one bbolt transaction
// per call, so every write is on disk before the caller relies on it.
//
// It also answers for the file itself, so that start-up can trust it before
// a reconcile deletes anything on its word:
//   - Open checks an existing file before bbolt reads it and fails with
//     ErrDamaged (path and cause, never a panic or a fault) when it is cut
//     short or its pages are broken (check.go);
//   - every file has an identity for the kernel objects made from it to
//     carry, and Origin says whether the file was just made, is empty, was
//     given its identity now, replaced another, or went back in time
//     (identity.go; package ownership decides what start-up does with it);
//   - SaveGoodCopy keeps a consistent copy beside the file after a clean
//     start, and Restore puts it back (goodcopy.go; `vxbridge state
//     restore`).
package store

import (
	"net/netip"
	"time"
)

// Subnet is one IPAM block of a network as docker handed it over.
type Subnet struct {
	Pool    netip.Prefix `json:"pool"`
	Gateway netip.Prefix `json:"gateway,omitzero"` // gateway address with the pool's prefix length
	// Aux holds --aux-address values (name -> address); they are reserved, never assigned.
	Aux map[string]netip.Addr `json:"aux,omitempty"`
	// AddressSpace is the IPAM address space docker named (vxbridge's own
	// spaces when its IPAM serves the network); empty in older records.
	AddressSpace string `json:"address_space,omitempty"`
}

// Network is a vxbridge network: one Linux bridge and its policy.
type Network struct {
	ID     string `json:"id"`
	Bridge string `json:"bridge"`
	MTU    int    `json:"mtu,omitempty"` // 0: kernel default
	// ICC false isolates the network's bridge ports from each other.
	ICC        bool `json:"icc"`
	Masquerade bool `json:"masquerade"`
	Internal   bool `json:"internal"`
	EnableIPv6 bool `json:"enable_ipv6"`
	// HostBindingIPv4 is the default host address for published ports.
	HostBindingIPv4 netip.Addr `json:"host_binding_ipv4,omitzero"`
	IPv4            []Subnet   `json:"ipv4,omitempty"`
	IPv6            []Subnet   `json:"ipv6,omitempty"`
	// Options is the raw generic option map, kept for diagnostics.
	Options map[string]string `json:"options,omitempty"`
	// VNI is the VXLAN network identifier of a cross-host network (-o
	// vxlan.id); 0 for a network local to this host.
	VNI uint32 `json:"vni,omitempty"`
	// NetNS names the network's own namespace (a cross-host network made
	// by a vxbridge that has them): its bridge, VXLAN device and the host
	// ends of its endpoints live there, and a gateway link of the bridge's
	// name joins it to the host's. "": everything in the host's namespace.
	NetNS string `json:"netns,omitempty"`
}

// Subnets returns the IPv4 then IPv6 subnets.
func (n *Network) Subnets() []Subnet {
	out := make([]Subnet, 0, len(n.IPv4)+len(n.IPv6))
	out = append(out, n.IPv4...)
	return append(out, n.IPv6...)
}

// Endpoint is one container interface on a network: a veth pair whose host
// end sits on the network's bridge.
type Endpoint struct {
	ID        string       `json:"id"`
	NetworkID string       `json:"network_id"`
	HostVeth  string       `json:"host_veth"`
	PeerVeth  string       `json:"peer_veth"` // name before docker moves and renames it
	MAC       string       `json:"mac"`
	IPv4      netip.Prefix `json:"ipv4,omitzero"`
	IPv6      netip.Prefix `json:"ipv6,omitzero"`
	Joined    bool         `json:"joined"`
	Sandbox   string       `json:"sandbox,omitempty"`
	// Ports are the endpoint's published ports (ProgramExternalConnectivity).
	Ports []PortMapping `json:"ports,omitempty"`
	// Created is when CreateEndpoint made it (zero in older records): an
	// endpoint left unjoined for long was given up by docker (package
	// orphans), however often the plugin restarted meanwhile.
	Created time.Time `json:"created,omitzero"`
}

// Pool is an IPAM pool handed out to docker by RequestPool.
type Pool struct {
	ID           string       `json:"id"`
	AddressSpace string       `json:"address_space"`
	Prefix       netip.Prefix `json:"prefix"`
	// Range is the --ip-range (SubPool) that dynamic addresses come from;
	// equal to Prefix when none was given.
	Range netip.Prefix `json:"range"`
	V6    bool         `json:"v6"`
	// Next is where the next dynamic allocation starts looking (round robin,
	// so a just released address is not handed out again at once).
	Next    netip.Addr        `json:"next,omitzero"`
	Options map[string]string `json:"options,omitempty"`
	// Refs counts the RequestPools holding the pool (the same request
	// twice gets the same pool); 0, in records older than the count, is 1.
	Refs int `json:"refs,omitempty"`
}

// AddressKind says why an address of a pool is taken.
type AddressKind string

const (
	KindEndpoint AddressKind = "endpoint"
	KindGateway  AddressKind = "gateway"
	// KindAux is a specific address asked for without the gateway marker
	// before the network exists: docker's network create reserving an
	// --aux-address. Records written before KindStatic existed also hold
	// endpoints' --ip addresses as aux; ipam.New rewrites those it can
	// attribute to a stored endpoint.
	KindAux AddressKind = "aux"
	// KindStatic is a specific address asked for by an endpoint (docker run
	// --ip/--ip6, or docker asking again for an endpoint's known address)
	// once its network exists.
	KindStatic AddressKind = "static"
)
