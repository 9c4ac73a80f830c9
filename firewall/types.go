// Package firewall owns vxbridge's iptables chains, or in docker's nftables
// mode its own nftables tables. types.go, rules.go (the desired rules of a
// network), guard.go (the VXLAN port rule), plan.go (the diff against a
// listing, as an iptables-restore script), nft_rules.go and nft_decode.go
// (the rules as nf_tables expressions and back) and nft_plan.go (the script
// as one nf_tables batch) are pure; iptables.go runs the binaries,
// nft_linux.go talks nf_tables netlink, vteps_linux.go keeps the VXLAN port
// rule's ipsets, and firewall.go ties them together. Design notes are at the
// top of firewall.go and guard.go.
package firewall

import "net/netip"

// Network is what the firewall needs to know of a vxbridge network.
type Network struct {
	// Owner is the identity of the state file the rules are made from
	// (package ownership/mark): their comments carry it. The Firewall's
	// methods set it to its own (SetOwner); "" writes the comments of
	// before identities.
	Owner      string
	ID         string
	Bridge     string
	Subnets    []netip.Prefix // v4 and v6 pools
	Internal   bool
	Masquerade bool
	ICC        bool
	// NamesPort, when not 0, is the port of vxbridge's DNS server, where
	// the containers' DNS queries to resolvers outside the network are
	// redirected (cross-host networks, package names).
	NamesPort int
	// HostAddrs are this host's own addresses in a cross-host network's
	// subnets: what the host itself sends into the network from a gateway
	// address (in Gateways, the source the host picks for the network's
	// subnets) leaves from them instead, so replies from containers on
	// other hosts come back to this host and not to their own host's
	// gateway.
	HostAddrs []netip.Addr
	Gateways  []netip.Addr
}
