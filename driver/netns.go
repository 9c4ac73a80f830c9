package driver

import (
	"fmt"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/store"
)

// Networks in a namespace of their own. dockerd turns br_netfilter on for
// the whole host namespace, so every frame a bridge there forwards goes
// through iptables and conntrack: 10-20% of a cross-host network's
// throughput (BENCHMARKS.md, figure 4). A cross-host network therefore
// lives in a namespace of its own, as docker's overlay networks do, with
// br_netfilter off there:
//
//	host namespace                     | namespace vxbridge-<12 hex of the id>
//	  <bridge name>: veth, gateway     | <bridge name>: bridge
//	    addresses, firewall rules  ----|--- vxgw (port)
//	  vxc<ep>: docker's end of each    |   vxh<ep> (port)
//	    endpoint, until docker takes it|   vxv-<vni>: VXLAN (created in the
//	                                   |     host's namespace: its socket is
//	                                   |     on the underlay; moved here)
//
// The gateway link's host end carries the gateway addresses under the
// bridge's name, so routing, masquerade, published ports and the firewall
// see the network as before. Containers reach each other, on this host and
// across the VXLAN, without leaving the namespace.
//
// Records say which layout a network has (store.Network.NetNS): networks
// made before keep theirs. The namespace is a bind mount and outlives the
// plugin; the reconciler removes one no record claims.

const (
	// NetNSPrefix starts the name of every network namespace of vxbridge's.
	NetNSPrefix = "vxbridge-"
	// gatewayInner is the gateway link's end in the network's namespace.
	gatewayInner       = "vxgw"
	aliasGatewayPrefix = AliasPrefix + "gw:"
)

func netNSName(id string) string { return NetNSPrefix + short(id) }

func gatewayAlias(id string) string { return aliasGatewayPrefix + id }

// placeNetwork gives a new cross-host network a namespace of its own when
// this vxbridge has namespaces; every other network lives in the host's.
func (d *Driver) placeNetwork(n *store.Network) {
	if n.VNI != 0 && d.spaces != nil {
		n.NetNS = netNSName(n.ID)
	}
}

// ensureNetNS returns the namespace of network n (which has one), made
// again if it is missing: only the reconciler and the network's own calls
// do that.
func (d *Driver) ensureNetNS(n *store.Network) (NetNS, error) {
	if d.spaces == nil {
		return nil, fmt.Errorf("network %s lives in namespace %s, but this vxbridge runs without network namespaces", short(n.ID), n.NetNS)
	}
	ns, err := d.spaces.Ensure(n.NetNS)
	if err != nil {
		return nil, netNSErr(n, err)
	}
	return ns, nil
}

// openNetNS returns the namespace of network n (which has one) if it
// exists; found is false if not. Status and teardown read a lost namespace
// as lost rather than make it again.
func (d *Driver) openNetNS(n *store.Network) (ns NetNS, found bool, err error) {
	if d.spaces == nil {
		return nil, false, nil
	}
	ns, found, err = d.spaces.Open(n.NetNS)
	if err != nil {
		return nil, false, netNSErr(n, err)
	}
	return ns, found, nil
}

func netNSErr(n *store.Network, err error) error {
	return fmt.Errorf("namespace %s of network %s: %w", n.NetNS, short(n.ID), err)
}

// linksOf returns the Links of the namespace where network n's bridge and
// the host ends of its endpoints are.
func (d *Driver) linksOf(n *store.Network) (Links, error) {
	if n.NetNS == "" {
		return d.links, nil
	}
	ns, err := d.ensureNetNS(n)
	if err != nil {
		return nil, err
	}
	return ns.Links(), nil
}

// linksOfNetwork is linksOf for a network known by id; an unknown one (its
// record already gone) is the host's.
func (d *Driver) linksOfNetwork(id string) (Links, error) {
	n, err := d.store.Network(id)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return d.links, nil
	}
	return d.linksOf(n)
}

// ensureBridge makes network n's bridge, in its namespace with the gateway
// link when it has one.
func (d *Driver) ensureBridge(n *store.Network) error {
	if n.NetNS == "" {
		return d.links.EnsureBridge(d.bridgeConfig(n))
	}
	ns, err := d.ensureNetNS(n)
	if err != nil {
		return err
	}
	if err := ns.Prepare(); err != nil {
		return netNSErr(n, err)
	}
	inner := bridge.BridgeConfig{Name: n.Bridge, Alias: netAlias(n.ID), MTU: n.MTU}
	if err := ns.Links().EnsureBridge(inner); err != nil {
		return fmt.Errorf("bridge %s in namespace %s: %w", n.Bridge, n.NetNS, err)
	}
	// Made in one request (AddVeth) when missing: only that way is the host
	// end born half-built, which EnsureGateway takes as vxbridge's.
	_, exists, err := ns.Links().Link(gatewayInner)
	if err != nil {
		return err
	}
	makeVeth := ns.Links().AddVeth
	if exists {
		makeVeth = ns.Links().EnsureVeth
	}
	err = makeVeth(bridge.VethConfig{
		HostName: gatewayInner, PeerName: n.Bridge, Bridge: n.Bridge, Alias: gatewayAlias(n.ID), MTU: n.MTU,
		PeerNS: d.spaces.HostFd(), PeerBuilding: true,
	})
	if err != nil {
		return fmt.Errorf("gateway link %s of network %s: %w", n.Bridge, short(n.ID), err)
	}
	return d.links.EnsureGateway(d.bridgeConfig(n))
}

// deleteBridge removes network n's bridge, or its gateway link and
// namespace.
func (d *Driver) deleteBridge(n *store.Network) {
	if n.NetNS == "" {
		d.logUndoErr("delete bridge", d.links.DeleteBridge(n.Bridge, netAlias(n.ID)), "bridge", n.Bridge)
		return
	}
	// The gateway link first, here: the namespace's links go when its last
	// user does, later, and the name must be free for a new network now.
	d.logUndoErr("delete gateway link", d.links.DeleteGateway(n.Bridge, netAlias(n.ID)), "link", n.Bridge)
	if d.spaces != nil {
		d.logUndoErr("delete network namespace", d.spaces.Delete(n.NetNS), "netns", n.NetNS)
	}
}

// purgeNamespaces deletes the half-built links in the namespaces of nets,
// as Reconcile does in the host's before anything is built: whatever a
// crash left so, before the networks and endpoints are ensured. A lost
// namespace is left to ensureNetwork. d.mu held.
func (d *Driver) purgeNamespaces(nets []store.Network, rep *ReconcileReport) {
	for i := range nets {
		if nets[i].NetNS == "" {
			continue
		}
		ns, found, err := d.openNetNS(&nets[i])
		if err == nil && found {
			err = ns.Links().PurgeUnfinished()
		}
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("namespace %s: %w", nets[i].NetNS, err))
		}
	}
}

// reconcileNamespaces removes the namespaces no network record claims and,
// in the others, the links no record claims (live: the aliases of the
// records). d.mu held.
func (d *Driver) reconcileNamespaces(nets []store.Network, live map[string]bool, rep *ReconcileReport) {
	if d.spaces == nil {
		return
	}
	claimed := map[string]*store.Network{}
	for i := range nets {
		if nets[i].NetNS != "" {
			claimed[nets[i].NetNS] = &nets[i]
		}
	}
	names, err := d.spaces.List()
	if err != nil {
		rep.Errors = append(rep.Errors, fmt.Errorf("list network namespaces: %w", err))
		return
	}
	for _, name := range names {
		if claimed[name] != nil {
			continue
		}
		if err := d.spaces.Delete(name); err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("delete network namespace %s: %w", name, err))
			continue
		}
		rep.RemovedLinks = append(rep.RemovedLinks, "netns:"+name)
		d.log.Info("removed orphan network namespace", "netns", name)
	}
	for name, n := range claimed {
		ns, err := d.ensureNetNS(n)
		if err != nil {
			rep.Errors = append(rep.Errors, err)
			continue
		}
		d.removeOrphanLinks(ns.Links(), name, live, rep)
	}
}
