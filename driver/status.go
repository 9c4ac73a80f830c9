package driver

import (
	"fmt"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/store"
)

// The reads behind `vxbridge status`: the records and the kernel, each
// under the lock that makes it one consistent snapshot. The rows they make
// are pure (status_rows.go).

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
		inNS, err := d.ownedLinksIn(&nets[i])
		if err != nil {
			return nil, nil, err
		}
		owned = append(owned, inNS...)
	}
	netRows, epRows := statusRows(nets, eps, owned)
	return netRows, epRows, nil
}

// ownedLinksIn lists the links carrying a vxbridge alias in the namespace
// of network n (which has one); none if the namespace is lost: its bridge
// is reported missing, and the reconciler makes the namespace again.
func (d *Driver) ownedLinksIn(n *store.Network) ([]bridge.LinkInfo, error) {
	ns, found, err := d.openNetNS(n)
	if err != nil || !found {
		return nil, err
	}
	links := ns.Links()
	links.Flush()
	owned, err := links.OwnedLinks(AliasPrefix)
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
	c.Peers, c.FDBEntries, c.NeighborEntries, c.Conflicts = peerRows(cfg.Peers.Status())
	c.LostBlocks = lostBlockRows(cfg.Blocks.LostBlocks())
	c.OldHosts = cfg.Cluster.OldHosts()
	c.ConflictsTotal = cfg.Peers.Conflicts()
	c.WatchListings, c.WatchEvents = cfg.Cluster.WatchStats()
	return c, nil
}
