// Package firewall owns vxbridge's iptables chains. types.go, rules.go (the
// desired rules of a network), guard.go (the VXLAN port rule) and plan.go
// (the diff against a listing, as an iptables-restore script) are pure;
// iptables.go runs the binaries, vteps_linux.go keeps the VXLAN port rule's
// ipsets, and firewall.go ties them together. Design notes are at the top of
// firewall.go and guard.go.
package firewall

import "net/netip"

// Network is what the firewall needs to know of a vxbridge network.
type Network struct {
	ID         string
	Bridge     string
	Subnets    []netip.Prefix // v4 and v6 pools
	Internal   bool
	Masquerade bool
	ICC        bool
}
