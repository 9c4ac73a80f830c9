package driver

import (
	"slices"
	"strconv"

	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/vxlan"
)

// ClusterStatus is the cross-host part of a status report: etcd, this
// host's VTEP, the peer hosts of the last etcd view with the VNIs they share
// with this host, and how many entries that asks of the kernel. nil on a
// single-host plugin.
func (d *Driver) ClusterStatus() (*status.Cluster, error) {
	if d.xh == nil {
		return nil, nil
	}
	nets, err := d.store.Networks()
	if err != nil {
		return nil, err
	}
	cfg := &d.xh.cfg
	c := &status.Cluster{VTEP: cfg.VTEP.String(), Peers: []status.Peer{}}
	c.Etcd.Endpoints = cfg.EtcdEndpoints
	ok, why := cfg.Cluster.Connected()
	c.Etcd.Connected, c.Etcd.Error = ok, why
	d.xh.mu.Lock()
	view, haveView := d.xh.view, d.xh.haveView
	d.xh.mu.Unlock()
	if !haveView {
		return c, nil
	}
	self := cfg.Cluster.HostID()
	shared := map[string][]string{} // host -> VNIs shared with this host
	for _, n := range nets {
		if n.VNI == 0 {
			continue
		}
		remotes := view.Remotes(self, n.VNI)
		t := vxlan.Desired(peersOf(remotes))
		c.FDBEntries += len(t.FDB)
		c.NeighborEntries += len(t.Neigh)
		for _, r := range remotes {
			vni := strconv.FormatUint(uint64(n.VNI), 10)
			if !slices.Contains(shared[r.Host], vni) {
				shared[r.Host] = append(shared[r.Host], vni)
			}
		}
	}
	for id, h := range view.Hosts {
		if id == self {
			continue
		}
		p := status.Peer{Host: id, VTEP: h.VTEP.String(), Networks: shared[id], Health: status.Healthy()}
		if !h.VTEP.IsValid() {
			p.Health = status.Unhealthy("no VTEP address in its host record")
		}
		c.Peers = append(c.Peers, p)
	}
	slices.SortFunc(c.Peers, func(a, b status.Peer) int {
		switch {
		case a.Host < b.Host:
			return -1
		case a.Host > b.Host:
			return 1
		}
		return 0
	})
	return c, nil
}
