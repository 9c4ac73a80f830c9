package driver

// The rows of a status report, from a snapshot of the records, the kernel
// and the cluster view (status.go takes it). All pure.

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/ipam"
	"github.com/vxbridge/vxbridge/ownership/mark"
	"github.com/vxbridge/vxbridge/peers"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/store"
)

// statusRows is the pure part of Status: records plus the links that carry
// a vxbridge alias, to the report's rows, sorted by id.
func statusRows(nets []store.Network, eps []store.Endpoint, owned []bridge.LinkInfo) ([]status.Network, []status.Endpoint) {
	byAlias := make(map[string]bridge.LinkInfo, len(owned))
	for _, l := range owned {
		byAlias[claimKey(l.Alias)] = l
	}
	perNet := map[string]int{}
	bridges := map[string]string{}
	for _, n := range nets {
		bridges[n.ID] = n.Bridge
	}
	outEps := make([]status.Endpoint, 0, len(eps))
	for _, ep := range eps {
		perNet[ep.NetworkID]++
		row := status.Endpoint{ID: ep.ID, NetworkID: ep.NetworkID, HostVeth: ep.HostVeth, MAC: ep.MAC, Joined: ep.Joined}
		if ep.IPv4.IsValid() {
			row.IPv4 = ep.IPv4.String()
		}
		if ep.IPv6.IsValid() {
			row.IPv6 = ep.IPv6.String()
		}
		row.Health = vethHealth(ep, bridges[ep.NetworkID], byAlias)
		outEps = append(outEps, row)
	}
	outNets := make([]status.Network, 0, len(nets))
	for _, n := range nets {
		row := status.Network{ID: n.ID, Bridge: n.Bridge, MTU: n.MTU, Internal: n.Internal, ICC: n.ICC,
			Subnets: subnetList(&n), Endpoints: perNet[n.ID], VNI: int(n.VNI), NetNS: n.NetNS}
		row.Health = bridgeHealth(&n, byAlias)
		outNets = append(outNets, row)
	}
	sort.Slice(outNets, func(i, j int) bool { return outNets[i].ID < outNets[j].ID })
	sort.Slice(outEps, func(i, j int) bool { return outEps[i].ID < outEps[j].ID })
	return outNets, outEps
}

func bridgeHealth(n *store.Network, byAlias map[string]bridge.LinkInfo) status.Health {
	l, ok := byAlias[mark.Alias("", mark.Net, n.ID)]
	switch {
	case !ok || l.Kind != "bridge": // a veth: the gateway link, its namespace's bridge unseen
		where := ""
		if n.NetNS != "" {
			where = " in namespace " + n.NetNS
		}
		return status.Unhealthy("bridge " + n.Bridge + where + " is missing (the reconciler re-creates it)")
	case l.Name != n.Bridge:
		return status.Unhealthy(fmt.Sprintf("the network's bridge is named %s, want %s", l.Name, n.Bridge))
	case n.MTU != 0 && l.MTU != n.MTU:
		return status.Unhealthy(fmt.Sprintf("bridge MTU is %d, want %d", l.MTU, n.MTU))
	}
	return status.Healthy()
}

func vethHealth(ep store.Endpoint, bridgeName string, byAlias map[string]bridge.LinkInfo) status.Health {
	l, ok := byAlias[mark.Alias("", mark.Endpoint, ep.ID)]
	switch {
	case bridgeName == "":
		return status.Unhealthy("its network " + short(ep.NetworkID) + " is not in the state file")
	case !ok:
		return status.Unhealthy("veth " + ep.HostVeth + " is missing")
	case l.Master != bridgeName:
		return status.Unhealthy(fmt.Sprintf("veth %s is on %q, want bridge %s", l.Name, l.Master, bridgeName))
	}
	return status.Healthy()
}

// peerRows is the pure part of ClusterStatus: the member hosts of this
// host's cross-host networks, with the VNIs they share with it, sorted by
// host; the FDB and neighbour entries programmed for them; and the claims
// refused.
func peerRows(nets []peers.Status) (rows []status.Peer, fdb, neigh int, conflicts []status.Conflict) {
	shared := map[string][]string{} // host -> VNIs shared with this host
	byHost := map[string]peers.Peer{}
	for _, n := range nets {
		vni := strconv.FormatUint(uint64(n.VNI), 10)
		fdb += n.FDB
		neigh += n.Neigh
		for _, p := range n.Peers {
			shared[p.Host] = append(shared[p.Host], vni)
			if old, ok := byHost[p.Host]; !ok || !p.Usable && old.Usable {
				byHost[p.Host] = p
			}
		}
		for _, c := range n.Conflicts {
			conflicts = append(conflicts, status.Conflict{Network: vni, Endpoint: c.Endpoint, What: c.What, Value: c.Value, HeldBy: c.Holder})
		}
	}
	rows = []status.Peer{}
	for id, p := range byHost {
		row := status.Peer{Host: id, VTEP: p.VTEP.String(), Networks: shared[id], Health: status.Healthy()}
		if !p.Usable {
			row.Health = status.Unhealthy("its VTEP " + p.VTEP.String() + " is not a unicast address vxbridge sends to (loopback, link-local, unset or this host's own): its endpoints are refused")
		}
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b status.Peer) int { return strings.Compare(a.Host, b.Host) })
	return rows, fdb, neigh, conflicts
}

// lostBlockRows shows the address blocks other hosts took from this one.
func lostBlockRows(lost []ipam.LostBlock) []status.LostBlock {
	var rows []status.LostBlock
	for _, x := range lost {
		addrs := make([]string, len(x.Addresses))
		for i, a := range x.Addresses {
			addrs[i] = a.String()
		}
		rows = append(rows, status.LostBlock{Pool: x.Pool.String(), Block: x.Block.String(), HeldBy: x.Holder, Addresses: addrs})
	}
	return rows
}
