package driver

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
	"strconv"

	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/store"
)

// Hosts reach every container. Every host of a cross-host network answers
// its gateway address, so a container on host B answers what host A itself
// sent it (from the gateway address) to B's gateway, and A never hears it.
// So each host takes an address of its own in each subnet of the network
// (HostAddresses: from its own address blocks, through the IPAM, so no
// container and no other host gets it), puts it on the link that holds the
// gateway addresses, has what it sends into the network leave from it
// (firewall.Network's HostAddrs: SNAT of locally made packets), and
// publishes it as a record of its own, with that link's MAC: the other
// hosts program it as they program a container, so their containers' replies
// cross back to this host. Containers keep the shared gateway as their
// default route. The address is taken in the background: it may need a
// block lease from etcd.

// hostEndpointID is the id of the record of this host's own addresses in
// network vni (ids of docker's endpoints are 64 hex digits).
func hostEndpointID(vni uint32) string { return "host-" + strconv.FormatUint(uint64(vni), 10) }

// hostAddrsOf returns this host's own addresses in network id, once taken.
func (d *Driver) hostAddrsOf(id string) []netip.Addr {
	if d.xh == nil {
		return nil
	}
	d.xh.mu.Lock()
	defer d.xh.mu.Unlock()
	return append([]netip.Addr(nil), d.xh.hostAddrs[id]...)
}

// seekHostAddrs takes this host's addresses in cross-host network n, in
// the background, then builds what uses them. Until they are taken the
// host reaches only its own containers; a failure is tried again at the
// next reconcile.
func (d *Driver) seekHostAddrs(n *store.Network) {
	if n.VNI == 0 || d.xh == nil || d.xh.cfg.HostAddrs == nil {
		return
	}
	d.xh.mu.Lock()
	if d.xh.seeking[n.ID] || len(d.xh.hostAddrs[n.ID]) > 0 {
		d.xh.mu.Unlock()
		return
	}
	d.xh.seeking[n.ID] = true
	d.xh.mu.Unlock()
	id := n.ID
	var pools []netip.Prefix
	for _, s := range n.Subnets() {
		pools = append(pools, s.Pool)
	}
	d.xh.background(func(ctx context.Context) {
		defer func() { d.xh.mu.Lock(); delete(d.xh.seeking, id); d.xh.mu.Unlock() }()
		var addrs []netip.Addr
		for _, p := range pools {
			a, err := d.xh.cfg.HostAddrs.HostAddress(ctx, p)
			if err != nil {
				d.log.Warn("cross-host: no address of this host's own in the network yet; the host reaches only its own containers there",
					"network", short(id), "subnet", p, "err", err)
				return
			}
			addrs = append(addrs, a)
		}
		d.xh.mu.Lock()
		d.xh.hostAddrs[id] = addrs
		d.xh.mu.Unlock()
		d.applyHostReach(id)
	})
}

// applyHostReach puts network id's host addresses on its gateway link and
// into its firewall rules, and publishes them.
func (d *Driver) applyHostReach(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, err := d.store.Network(id)
	if err != nil || n == nil {
		return // deleted meanwhile
	}
	if err := d.ensureNetwork(n); err != nil {
		d.log.Warn("cross-host: this host's own address not set up; the reconciler tries again", "network", short(id), "err", err)
		return
	}
	d.publishHost(n)
	d.log.Info("this host reaches the network's containers on every host", "network", short(id), "from", d.hostAddrsOf(id))
}

// publishHost publishes network n's host addresses as a record of this
// host, with the MAC of the link holding them, and keeps other hosts'
// records from claiming them.
func (d *Driver) publishHost(n *store.Network) {
	addrs := d.hostAddrsOf(n.ID)
	if len(addrs) == 0 {
		return
	}
	info, found, err := d.links.Link(n.Bridge)
	if err != nil || !found || info.MAC == "" {
		return // the reconciler makes it again, then publishes
	}
	rec := cluster.Endpoint{ID: hostEndpointID(n.VNI), VNI: n.VNI, MAC: info.MAC}
	for _, a := range addrs {
		if a.Is4() {
			rec.IPv4 = a
		} else {
			rec.IPv6 = a
		}
	}
	d.cluster().Publish(rec)
	d.setLocal(n.VNI, func(m map[string]localEndpoint) { m[rec.ID] = localEndpoint{ips: addrs, mac: info.MAC} })
	d.xh.mu.Lock()
	d.xh.hostRecs[n.ID] = rec
	d.xh.mu.Unlock()
}

// hostAddrRows lists the published host records, by VNI.
func (d *Driver) hostAddrRows() []status.HostAddr {
	d.xh.mu.Lock()
	recs := make([]cluster.Endpoint, 0, len(d.xh.hostRecs))
	for _, r := range d.xh.hostRecs {
		recs = append(recs, r)
	}
	d.xh.mu.Unlock()
	slices.SortFunc(recs, func(a, b cluster.Endpoint) int { return cmp.Compare(a.VNI, b.VNI) })
	var out []status.HostAddr
	for _, r := range recs {
		row := status.HostAddr{Network: strconv.FormatUint(uint64(r.VNI), 10), MAC: r.MAC}
		for _, a := range []netip.Addr{r.IPv4, r.IPv6} {
			if a.IsValid() {
				row.Addresses = append(row.Addresses, a.String())
			}
		}
		out = append(out, row)
	}
	return out
}

// hostPrefixes are network n's host addresses as the gateway link holds
// them: one address each, beside the gateway's subnet route.
func (d *Driver) hostPrefixes(n *store.Network) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range d.hostAddrsOf(n.ID) {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

// forgetHostReach drops network n's host addresses (it is being deleted;
// the IPAM freed them with its pool).
func (d *Driver) forgetHostReach(n *store.Network) {
	d.cluster().Withdraw(hostEndpointID(n.VNI))
	d.xh.mu.Lock()
	delete(d.xh.hostAddrs, n.ID)
	delete(d.xh.hostRecs, n.ID)
	d.xh.mu.Unlock()
}
