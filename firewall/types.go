// Package firewall owns vxbridge's iptables chains, or in docker's nftables
// mode its own nftables tables. types.go, rules.go (the desired rules of a
// network), plan.go (the diff against a listing, as an iptables-restore
// script), nft_rules.go and nft_decode.go (the rules as nf_tables
// expressions and back) and nft_plan.go (the script as one nf_tables
// batch) are pure; iptables.go runs the binaries, nft_linux.go talks
// nf_tables netlink, and firewall.go ties them together. Design notes are
// at the top of firewall.go.
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
