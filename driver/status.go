package driver

import (
	"fmt"
	"sort"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/store"
)

// Status fills the networks and endpoints of a status report from the store
// and checks each against the kernel: a bridge or veth that is missing, has
// lost its owner alias, or sits on the wrong bridge is reported, not fixed
// (the reconciler fixes). It reads only and holds the driver lock for the
// one consistent snapshot.
func (d *Driver) Status() ([]status.Network, []status.Endpoint, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.links.Flush() // a deleted endpoint's veth is not reported as a leftover
	nets, err := d.store.Networks()
	if err != nil {
		return nil, nil, err
	}
	eps, err := d.store.Endpoints()
	if err != nil {
		return nil, nil, err
	}
	owned, err := d.links.OwnedLinks(AliasPrefix)
	if err != nil {
		return nil, nil, fmt.Errorf("list links: %w", err)
	}
	// A network's own namespace holds its bridge and endpoint veths: listed
	// after the host's, its bridge stands for the network (the gateway
	// link's host end carries the same alias).
	for i := range nets {
		if nets[i].NetNS == "" {
			continue
		}
		ns, found, err := d.openNetNS(&nets[i])
		if err != nil {
			return nil, nil, err
		}
		if !found {
			continue // its bridge is reported missing; the reconciler makes the namespace again
		}
		links := ns.Links()
		links.Flush()
		inNS, err := links.OwnedLinks(AliasPrefix)
		if err != nil {
			return nil, nil, fmt.Errorf("list links of namespace %s: %w", nets[i].NetNS, err)
		}
		owned = append(owned, inNS...)
	}
	return statusOf(nets, eps, owned)
}

// statusOf is the pure part of Status: records plus the links that carry a
// vxbridge alias, to the report's rows, sorted by id.
func statusOf(nets []store.Network, eps []store.Endpoint, owned []bridge.LinkInfo) ([]status.Network, []status.Endpoint, error) {
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
	return outNets, outEps, nil
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
