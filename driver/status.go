package driver

import (
	"fmt"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/store"
)

// The reads behind `vxbridge status` and the metrics gauges: the records
// and the kernel, read without the driver's lock (a scrape never waits
// behind a network call or a reconcile stuck on iptables). The rows they
// make are pure (status_rows.go).

// Status fills the networks and endpoints of a status report from the store
// and checks each against the kernel: a bridge or veth that is missing, has
// lost its owner alias, or sits on the wrong bridge is reported, not fixed
// (the reconciler fixes). It takes no driver lock: it reads the records,
// the links, and the records again, and reports the records of both reads.
// Creates make the kernel's objects before the record, deletes drop the
// record first, so a record there before and after the links were read
// had its objects in place meanwhile, unless they are missing indeed; one
// created or deleted meanwhile is left out of this report.
func (d *Driver) Status() ([]status.Network, []status.Endpoint, error) {
	nets, eps, err := d.records()
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
		inNS, err := d.ownedLinksIn(&nets[i])
		if err != nil {
			return nil, nil, err
		}
		owned = append(owned, inNS...)
	}
	nets2, eps2, err := d.records()
	if err != nil {
		return nil, nil, err
	}
	netRows, epRows := statusRows(inBoth(nets, nets2, networkID), inBoth(eps, eps2, endpointID), owned)
	return netRows, epRows, nil
}

func (d *Driver) records() ([]store.Network, []store.Endpoint, error) {
	nets, err := d.store.Networks()
	if err != nil {
		return nil, nil, err
	}
	eps, err := d.store.Endpoints()
	return nets, eps, err
}

func networkID(n store.Network) string   { return n.ID }
func endpointID(e store.Endpoint) string { return e.ID }

// inBoth is the records of after whose id before has too.
func inBoth[T any](before, after []T, id func(T) string) []T {
	had := make(map[string]bool, len(before))
	for _, r := range before {
		had[id(r)] = true
	}
	out := make([]T, 0, len(after))
	for _, r := range after {
		if had[id(r)] {
			out = append(out, r)
		}
	}
	return out
}

// ownedLinksIn lists the links carrying a vxbridge alias in the namespace
// of network n (which has one); none if the namespace is lost: its bridge
// is reported missing, and the reconciler makes the namespace again.
func (d *Driver) ownedLinksIn(n *store.Network) ([]bridge.LinkInfo, error) {
	ns, found, err := d.openNetNS(n)
	if err != nil || !found {
		return nil, err
	}
	owned, err := ns.Links().OwnedLinks(AliasPrefix)
	if err != nil {
		return nil, fmt.Errorf("list links of namespace %s: %w", n.NetNS, err)
	}
	return owned, nil
}

// ClusterStatus is the cross-host part of a status report: etcd, this
// host's VTEP, the member hosts of its cross-host networks with the VNIs
// they share with it, the entries programmed for them and the claims
// refused. nil on a single-host plugin. It takes no driver lock.
func (d *Driver) ClusterStatus() (*status.Cluster, error) {
	if d.xh == nil {
		return nil, nil
	}
	cfg := &d.xh.cfg
	c := &status.Cluster{VTEP: cfg.VTEP.String(), Peers: []status.Peer{}}
	c.Etcd.Endpoints = cfg.EtcdEndpoints
	c.Etcd.Connected, c.Etcd.Error = cfg.Cluster.Connected()
	nets := cfg.Peers.Status()
	c.Peers, c.FDBEntries, c.NeighborEntries, c.Conflicts = peerRows(nets)
	c.Programming = status.ProgrammingEager
	if cfg.OnDemand {
		c.Programming = status.ProgrammingOnDemand
	}
	for _, n := range nets {
		c.RemoteEndpoints += n.Endpoints
	}
	c.Names = nameRows(nets)
	c.HostAddrs = d.hostAddrRows()
	c.LostBlocks = lostBlockRows(cfg.Blocks.LostBlocks())
	c.OldHosts = cfg.Cluster.OldHosts()
	c.ConflictsTotal = cfg.Peers.Conflicts()
	c.WatchListings, c.WatchEvents = cfg.Cluster.WatchStats()
	return c, nil
}
