// Package firewall owns vxbridge's iptables chains. types.go and rules.go are
// pure (the desired rules of a network); firewall.go applies them.
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
