// Package cluster keeps vxbridge's cross-host state in etcd: which hosts are
// alive (a record attached to a lease each host keeps alive), the endpoints
// of cross-host networks on each host (attached to the same lease, so they go
// when the host goes), which VNI carries which subnets, and the address
// blocks each host leased from a pool.
//
// Key layout under the prefix (--etcd-prefix, default /vxbridge):
//
//	hosts/<host>                host record (JSON), on the host's lease
//	endpoints/<host>/<ep>       endpoint record (JSON), on the host's lease
//	networks/<vni>              the subnets of a VNI (JSON), no lease
//	subnets/<subnet>            the VNI of a subnet, no lease
//	blocks/<pool>/<block>       the host that last claimed an address block, no lease
//	hostblocks/<host>/<pool>/<block>  the host's claim of that block, on its lease (blocks.go)
//	memberships/<host>/<vni>    the host has the network, on the host's lease
//	net/<vni>/...               each network's own records (netrecords.go)
//
// Nothing here is on the path of a call that can be answered locally:
// endpoints are published by a background loop that retries (Publisher),
// peers arrive through a watch that re-lists when it falls behind (Watch),
// and only creating a cross-host network (the consistency check) and
// leasing a new address block wait for etcd.
//
// This file is pure: records, keys and the consistency rules.
package cluster

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// DefaultPrefix is where vxbridge's keys live unless --etcd-prefix says.
const DefaultPrefix = "/vxbridge"

// Host is a live vxbridge host.
type Host struct {
	ID   string     `json:"id"`
	VTEP netip.Addr `json:"vtep"`
	Port int        `json:"port"` // VXLAN UDP port
	// Layout is the key layout the host writes and reads: LayoutByNetwork
	// for hosts that publish records by network; absent (0) on hosts of
	// the versions before, which watch the whole prefix.
	Layout int `json:"layout,omitempty"`
}

// LayoutByNetwork marks hosts that write each network's records under
// net/<vni>/ (netrecords.go).
const LayoutByNetwork = 2

// Endpoint is a container interface on a cross-host network.
type Endpoint struct {
	ID   string     `json:"id"`
	Host string     `json:"host"`
	VNI  uint32     `json:"vni"`
	MAC  string     `json:"mac"`
	IPv4 netip.Addr `json:"ipv4,omitzero"`
	IPv6 netip.Addr `json:"ipv6,omitzero"`
	// Name is the container's name and Domain the name docker gives the
	// network on the endpoint's host, as docker's embedded DNS answers a
	// PTR query for the endpoint's address ("web" and "xnet" of
	// "web.xnet"). Learned after Join (package names); empty until then,
	// and in records of hosts of versions before names.
	Name   string `json:"name,omitempty"`
	Domain string `json:"domain,omitempty"`
	// Rev is the etcd revision that created the record (not stored in it):
	// of two records claiming one address, the older keeps it.
	Rev int64 `json:"-"`
}

// Network is the cluster-wide identity of a cross-host network.
type Network struct {
	VNI     uint32         `json:"vni"`
	Subnets []netip.Prefix `json:"subnets"`
	Host    string         `json:"host,omitempty"` // the host that first created it
}

type keys struct{ prefix string }

func newKeys(prefix string) keys {
	prefix = strings.TrimRight(prefix, "/")
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return keys{prefix: prefix}
}

func (k keys) hosts() string                 { return k.prefix + "/hosts/" }
func (k keys) host(id string) string         { return k.hosts() + id }
func (k keys) endpoints() string             { return k.prefix + "/endpoints/" }
func (k keys) hostEndpoints(h string) string { return k.endpoints() + h + "/" }
func (k keys) endpoint(h, ep string) string  { return k.hostEndpoints(h) + ep }
func (k keys) network(vni uint32) string {
	return k.prefix + "/networks/" + strconv.FormatUint(uint64(vni), 10)
}
func (k keys) subnet(p netip.Prefix) string { return k.prefix + "/subnets/" + escapePrefix(p) }
func (k keys) blocks(pool string) string    { return k.prefix + "/blocks/" + pool + "/" }
func (k keys) block(pool string, b netip.Prefix) string {
	return k.blocks(pool) + escapePrefix(b)
}
func (k keys) allBlocks() string             { return k.prefix + "/blocks/" }
func (k keys) allHostBlocks() string         { return k.prefix + "/hostblocks/" }
func (k keys) hostBlocks(host string) string { return k.allHostBlocks() + host + "/" }
func (k keys) hostBlock(host, pool string, b netip.Prefix) string {
	return k.hostBlocks(host) + pool + "/" + escapePrefix(b)
}

// escapePrefix keeps a prefix one key segment: 10.1.0.0/24 -> 10.1.0.0_24.
func escapePrefix(p netip.Prefix) string {
	return p.Addr().String() + "_" + strconv.Itoa(p.Bits())
}

func unescapePrefix(s string) (netip.Prefix, error) {
	return netip.ParsePrefix(strings.Replace(s, "_", "/", 1))
}

// PoolKey names a pool in block keys: its prefix, escaped.
func PoolKey(p netip.Prefix) string { return escapePrefix(p) }

// CheckNetwork refuses want when the cluster already uses its VNI with other
// subnets (have is the VNI's record), naming both.
func CheckNetwork(have, want Network) error {
	a, b := sortedPrefixes(have.Subnets), sortedPrefixes(want.Subnets)
	if slices.Equal(a, b) {
		return nil
	}
	return fmt.Errorf("vxlan.id %d is already used with subnet %s (created on host %s); this network asks for subnet %s: use the same --subnet on every host, or another vxlan.id",
		want.VNI, joinPrefixes(a), orUnknown(have.Host), joinPrefixes(b))
}

// CheckSubnet refuses want when one of its subnets is already the subnet of
// another VNI (vniOf holds what the cluster says), naming both.
func CheckSubnet(want Network, subnet netip.Prefix, otherVNI uint32) error {
	if otherVNI == want.VNI {
		return nil
	}
	return fmt.Errorf("subnet %s is already used by the cross-host network with vxlan.id %d; this network asks for vxlan.id %d: use vxlan.id=%d on every host, or another --subnet",
		subnet, otherVNI, want.VNI, otherVNI)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func sortedPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := slices.Clone(ps)
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, " and ")
}
