package driver

// Adoption (ownership.Adopt, `vxbridge serve --adopt`): when the state file
// that made the kernel's networks is lost (moved, replaced, a changed
// --state-dir), records are made again from what the kernel still shows,
// so that docker's later calls on them work and its deletes leave nothing:
//
//	network   its bridge (or the gateway link of a network with a namespace
//	          of its own: the namespace whose name holds its id): the name,
//	          MTU and gateway addresses, hence the subnets; internal, icc and
//	          masquerade from its firewall rules (docker's defaults when it
//	          has none); the VNI from its VXLAN device
//	endpoint  its veth on that bridge; the container end's MAC and addresses,
//	          read in the container's namespace (bridge.Inspect), or the
//	          IPv4 address its MAC was made from; joined when docker has
//	          renamed the container end; the published ports its DNAT rules
//	          still implement
//
// What the kernel does not keep is lost: --ip-range, --aux-address, options
// docker passed only at create (host_binding_ipv4), the IPv6 and loopback
// ports vxbridge's relay alone served, and which IPAM served the network.
// The IPAM makes an adopted network's pool when docker first asks for it
// (ipam.Options.AdoptedPool). The reconcile that follows gives every
// adopted object this state's identity.

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/ownership/mark"
	"github.com/vxbridge/vxbridge/store"
)

// OptAdopted is set in an adopted network's options (store.Network.Options,
// kept for diagnostics) to the identity of the state file whose objects it
// was made from ("none": from before identities).
const OptAdopted = "vxbridge.adopted"

// adopt makes records for the networks and endpoints no record claims,
// whatever state file made them, and lists them in rep. d.mu held.
func (d *Driver) adopt(rep *ReconcileReport) {
	rules, err := d.fw.OwnedRules()
	if err != nil {
		rep.fail("", fmt.Errorf("adopt: firewall rules unreadable, networks get docker's default options and no published ports: %w", err))
	}
	nets, err := d.store.Networks()
	if err != nil {
		rep.fail("", err)
		return
	}
	eps, err := d.store.Endpoints()
	if err != nil {
		rep.fail("", err)
		return
	}
	byID := make(map[string]*store.Network, len(nets))
	for i := range nets {
		byID[nets[i].ID] = &nets[i]
	}
	known := claimsOf(byID, eps)
	d.adoptNetworks(byID, known, rules, rep)
	for _, id := range slices.Sorted(maps.Keys(byID)) {
		d.adoptEndpoints(byID[id], known, rules, rep)
	}
}

// adoptNetworks makes a record for each network link of the host's
// namespace that no record claims, and adds it to byID.
func (d *Driver) adoptNetworks(byID map[string]*store.Network, known map[claim]bool, rules []firewall.OwnedRule, rep *ReconcileReport) {
	host, err := d.links.OwnedLinks(AliasPrefix)
	if err != nil {
		rep.fail("", err)
		return
	}
	for _, l := range host {
		c, identity, ok := claimOf(l.Alias)
		if !ok || c.kind != mark.Net || known[c] {
			continue
		}
		n, err := d.adoptedNetwork(l, c.id, rules)
		if err == nil {
			n.Options = map[string]string{OptAdopted: cmp.Or(identity, "none")}
			err = d.store.SaveNetwork(n)
		}
		if err != nil {
			rep.fail("", fmt.Errorf("adopt network %s (%s): %w", short(c.id), l.Name, err))
			continue
		}
		byID[n.ID] = n
		rep.Adopted = append(rep.Adopted, "network "+n.ID)
		d.log.Info("network adopted", "network", n.ID, "bridge", n.Bridge, "subnets", subnetList(n), "netns", n.NetNS,
			"vni", n.VNI, "icc", n.ICC, "masquerade", n.Masquerade, "internal", n.Internal, "from", l.Alias)
	}
}

// adoptedNetwork is the record of network id whose bridge, or gateway link,
// is l.
func (d *Driver) adoptedNetwork(l bridge.LinkInfo, id string, rules []firewall.OwnedRule) (*store.Network, error) {
	f, found, err := d.links.Inspect(l.Name)
	if err != nil || !found {
		return nil, cmp.Or(err, fmt.Errorf("link %s is gone", l.Name))
	}
	pol, ok := firewall.ReadPolicy(rules, id)
	if !ok {
		pol = firewall.Policy{ICC: true, Masquerade: true}
	}
	n := &store.Network{ID: id, Bridge: l.Name, MTU: l.MTU, ICC: pol.ICC, Masquerade: pol.Masquerade, Internal: pol.Internal}
	for _, a := range f.Addrs {
		s := store.Subnet{Pool: a.Masked(), Gateway: a}
		if a.Addr().Is4() {
			n.IPv4 = append(n.IPv4, s)
		} else {
			n.IPv6 = append(n.IPv6, s)
		}
	}
	n.EnableIPv6 = len(n.IPv6) > 0
	if len(n.IPv4)+len(n.IPv6) == 0 {
		return nil, fmt.Errorf("%s %s holds no gateway address to tell its subnets by", l.Kind, l.Name)
	}
	vxLinks := d.links
	if l.Kind == "veth" { // the gateway link of a network with a namespace of its own
		ns, err := d.adoptNetNS(n)
		if err != nil {
			return nil, err
		}
		vxLinks = ns.Links()
	}
	n.VNI, err = vniOf(vxLinks, id)
	return n, err
}

// adoptNetNS finds the namespace of network n, whose gateway link is in
// the host's, by the id its name holds, and records it in n.
func (d *Driver) adoptNetNS(n *store.Network) (NetNS, error) {
	if d.spaces == nil {
		return nil, fmt.Errorf("%s is a gateway link, but this vxbridge runs without network namespaces (--netns-dir)", n.Bridge)
	}
	names, err := d.spaces.List()
	if err != nil {
		return nil, fmt.Errorf("list network namespaces: %w", err)
	}
	for _, name := range names {
		if _, s, ok := mark.ParseNetNS(name); ok && s == short(n.ID) {
			n.NetNS = name
			ns, found, err := d.openNetNS(n)
			if err == nil && !found {
				err = fmt.Errorf("namespace %s is gone", name)
			}
			return ns, err
		}
	}
	return nil, fmt.Errorf("no network namespace holds network %s's id", short(n.ID))
}

// vniOf reads the VNI of network id's VXLAN device among links; 0 when it
// has none (a network of this host only).
func vniOf(links Links, id string) (uint32, error) {
	owned, err := links.OwnedLinks(AliasPrefix)
	if err != nil {
		return 0, err
	}
	for _, l := range owned {
		if c, _, ok := claimOf(l.Alias); ok && c == (claim{mark.VXLAN, id}) {
			f, found, err := links.Inspect(l.Name)
			if err != nil || !found {
				return 0, cmp.Or(err, fmt.Errorf("vxlan device %s is gone", l.Name))
			}
			return f.VNI, nil
		}
	}
	return 0, nil
}

// adoptEndpoints makes a record for each veth on network n's bridge that
// no record claims.
func (d *Driver) adoptEndpoints(n *store.Network, known map[claim]bool, rules []firewall.OwnedRule, rep *ReconcileReport) {
	links, err := d.linksOf(n)
	if err != nil {
		rep.fail(n.NetNS, err)
		return
	}
	owned, err := links.OwnedLinks(AliasPrefix)
	if err != nil {
		rep.fail(n.NetNS, err)
		return
	}
	for _, l := range owned {
		c, _, ok := claimOf(l.Alias)
		if !ok || c.kind != mark.Endpoint || known[c] || l.Master != n.Bridge {
			continue
		}
		ep, err := adoptedEndpoint(n, links, l, c.id, rules)
		if err == nil {
			err = d.store.SaveEndpoint(ep)
		}
		if err != nil {
			rep.fail(n.NetNS, fmt.Errorf("adopt endpoint %s (%s): %w", short(c.id), l.Name, err))
			continue
		}
		known[c] = true
		rep.Adopted = append(rep.Adopted, "endpoint "+ep.ID)
		d.log.Info("endpoint adopted", "network", short(n.ID), "endpoint", ep.ID, "veth", ep.HostVeth, "mac", ep.MAC,
			"ipv4", ep.IPv4, "ipv6", ep.IPv6, "joined", ep.Joined, "ports", len(ep.Ports), "from", l.Alias)
	}
}

// adoptedEndpoint is the record of endpoint id of network n, whose veth's
// host end is l.
func adoptedEndpoint(n *store.Network, links Links, l bridge.LinkInfo, id string, rules []firewall.OwnedRule) (*store.Endpoint, error) {
	f, found, err := links.Inspect(l.Name)
	if err != nil || !found {
		return nil, cmp.Or(err, fmt.Errorf("link %s is gone", l.Name))
	}
	if f.Peer == nil || len(f.Peer.MAC) != 6 {
		return nil, fmt.Errorf("the container end of %s is not to be found", l.Name)
	}
	ep := &store.Endpoint{
		ID: id, NetworkID: n.ID, HostVeth: l.Name, PeerVeth: peerVethPrefix + short(id), MAC: f.Peer.MAC.String(),
		Created: time.Now().UTC().Truncate(time.Second),
		Ports:   storeMappings(firewall.ReadPorts(rules, id)),
	}
	// Docker renames the container end when it moves it into the
	// container: under vxbridge's name it was never joined.
	ep.Joined = f.Peer.Name != ep.PeerVeth
	ep.IPv4, ep.IPv6 = foundAddrs(n, f.Peer)
	if !ep.IPv4.IsValid() && !ep.IPv6.IsValid() && len(n.Subnets()) > 0 && ep.Joined {
		return nil, fmt.Errorf("the container end of %s (MAC %s) shows no address of the network's subnets", l.Name, ep.MAC)
	}
	return ep, nil
}

// foundAddrs are the endpoint addresses of a container end: those it holds
// in n's subnets, or, before docker configured it, the IPv4 address its
// MAC was made from (addrMAC). Pure.
func foundAddrs(n *store.Network, p *bridge.Peer) (v4, v6 netip.Prefix) {
	for _, a := range p.Addrs {
		for _, s := range n.Subnets() {
			if s.Pool.Contains(a.Addr()) && a.Addr().Is4() && !v4.IsValid() {
				v4 = a
			} else if s.Pool.Contains(a.Addr()) && a.Addr().Is6() && !v6.IsValid() {
				v6 = a
			}
		}
	}
	if v4.IsValid() || len(p.MAC) != 6 || p.MAC[0] != 0x76 || p.MAC[1] != 0x78 {
		return v4, v6
	}
	a := netip.AddrFrom4([4]byte(p.MAC[2:6]))
	for _, s := range n.IPv4 {
		if s.Pool.Contains(a) {
			return netip.PrefixFrom(a, s.Pool.Bits()), v6
		}
	}
	return v4, v6
}

// storeMappings is the store's view of mappings read back from rules.
func storeMappings(ms []firewall.PortMapping) []store.PortMapping {
	var out []store.PortMapping
	for _, m := range ms {
		out = append(out, store.PortMapping{Proto: m.Proto, HostIP: m.HostIP, HostPort: m.HostPort,
			ContainerIP: m.ContainerIP, ContainerPort: m.ContainerPort})
	}
	return out
}
