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
	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/store"
	"github.com/vxbridge/vxbridge/vxlan"
)

// statusRows is the pure part of Status: records plus the links that carry
// a vxbridge alias, to the report's rows, sorted by id.
func statusRows(nets []store.Network, eps []store.Endpoint, owned []bridge.LinkInfo) ([]status.Network, []status.Endpoint) {
	byAlias := make(map[string]bridge.LinkInfo, len(owned))
	for _, l := range owned {
		byAlias[l.Alias] = l
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
	l, ok := byAlias[netAlias(n.ID)]
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
	l, ok := byAlias[endpointAlias(ep.ID)]
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

// peerRows is the pure part of ClusterStatus: the peer hosts of view other
// than self, with the VNIs of nets they share with this host, sorted by
// host; and how many FDB and neighbour entries those peers ask of the
// kernel.
func peerRows(nets []store.Network, view cluster.View, self string) (peers []status.Peer, fdb, neigh int) {
	shared := map[string][]string{} // host -> VNIs shared with this host
	for _, n := range nets {
		if n.VNI == 0 {
			continue
		}
		remotes := view.Remotes(self, n.VNI)
		t := vxlan.Desired(peersOf(remotes))
		fdb += len(t.FDB)
		neigh += len(t.Neigh)
		for _, r := range remotes {
			vni := strconv.FormatUint(uint64(n.VNI), 10)
			if !slices.Contains(shared[r.Host], vni) {
				shared[r.Host] = append(shared[r.Host], vni)
			}
		}
	}
	peers = []status.Peer{}
	for id, h := range view.Hosts {
		if id == self {
			continue
		}
		p := status.Peer{Host: id, VTEP: h.VTEP.String(), Networks: shared[id], Health: status.Healthy()}
		if !h.VTEP.IsValid() {
			p.Health = status.Unhealthy("no VTEP address in its host record")
		}
		peers = append(peers, p)
	}
	slices.SortFunc(peers, func(a, b status.Peer) int { return strings.Compare(a.Host, b.Host) })
	return peers, fdb, neigh
}
