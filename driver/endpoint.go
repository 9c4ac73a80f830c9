package driver

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/driver/ports"
	"github.com/vxbridge/vxbridge/internal/netdev"
	"github.com/vxbridge/vxbridge/store"
)

// Veth names: a fixed prefix plus 12 hex of the endpoint id fills the 15
// bytes an interface name may have.
const (
	hostVethPrefix = "vxh"
	peerVethPrefix = "vxc"
	// ContainerIfPrefix is what docker names the container end: eth0, eth1...
	ContainerIfPrefix = "eth"
)

// newEndpoint builds the endpoint record a CreateEndpoint asks for. Pure but
// for the MAC choice (endpointMAC).
func (d *Driver) newEndpoint(req *network.CreateEndpointRequest, n *store.Network) (*store.Endpoint, error) {
	if err := validID("endpoint", req.EndpointID); err != nil {
		return nil, err
	}
	ep := &store.Endpoint{
		ID:        req.EndpointID,
		NetworkID: n.ID,
		HostVeth:  hostVethPrefix + short(req.EndpointID),
		PeerVeth:  peerVethPrefix + short(req.EndpointID),
		Created:   time.Now().UTC().Truncate(time.Second),
	}
	iface := req.Interface
	if iface == nil {
		iface = &network.EndpointInterface{}
	}
	var err error
	if ep.IPv4, err = endpointAddr(iface.Address, n.IPv4, "IPv4"); err != nil {
		return nil, err
	}
	if ep.IPv6, err = endpointAddr(iface.AddressIPv6, n.IPv6, "IPv6"); err != nil {
		return nil, err
	}
	if iface.MacAddress != "" {
		mac, err := net.ParseMAC(iface.MacAddress)
		if err != nil || len(mac) != 6 {
			return nil, invalidf("mac address %q is not a 6-byte ethernet address", iface.MacAddress)
		}
		ep.MAC = mac.String()
	} else if ep.MAC, err = d.endpointMAC(n, ep); err != nil {
		return nil, err
	}
	return ep, nil
}

// endpointMAC picks the MAC of an endpoint docker gave none: one derived
// from its address (addrMAC), else a random one. A container restarted
// with the same --ip (a new endpoint) so keeps its MAC, and the ARP and
// neighbour caches of its peers, here and on other hosts, stay right:
// with a new MAC they would send to the old one until their entry ages
// out, many seconds in which the container is unreachable.
func (d *Driver) endpointMAC(n *store.Network, ep *store.Endpoint) (string, error) {
	if mac, fromV4 := addrMAC(ep.IPv4, ep.IPv6); mac != "" {
		if fromV4 {
			return mac, nil // an IPv4 address is unique in the network, so is its MAC
		}
		// From an IPv6 address's low 32 bits: another endpoint's address
		// may share them.
		taken, err := d.macTaken(n, mac)
		if err != nil {
			return "", err
		}
		if !taken {
			return mac, nil
		}
	}
	mac, err := d.macGen()
	if err != nil {
		return "", fmt.Errorf("generate mac address: %w", err)
	}
	return mac, nil
}

// addrMAC derives a locally administered unicast MAC from an endpoint's
// IPv4 address (76:78:a:b:c:d, "vx" and the address) or, without one, from
// the low 32 bits of its IPv6 address (76:36:..., "v6"). "" without either.
// Pure.
func addrMAC(v4, v6 netip.Prefix) (mac string, fromV4 bool) {
	switch {
	case v4.IsValid() && v4.Addr().Is4():
		a := v4.Addr().As4()
		return net.HardwareAddr{0x76, 0x78, a[0], a[1], a[2], a[3]}.String(), true
	case v6.IsValid() && v6.Addr().Is6():
		a := v6.Addr().As16()
		return net.HardwareAddr{0x76, 0x36, a[12], a[13], a[14], a[15]}.String(), false
	}
	return "", false
}

// macTaken says whether an endpoint of network n has MAC mac: one of this
// host's or, on a cross-host network, one of the cluster's as last seen.
func (d *Driver) macTaken(n *store.Network, mac string) (bool, error) {
	eps, err := d.store.Endpoints()
	if err != nil {
		return false, err
	}
	for i := range eps {
		if eps[i].NetworkID == n.ID && eps[i].MAC == mac {
			return true, nil
		}
	}
	if n.VNI == 0 || d.xh == nil {
		return false, nil
	}
	return d.peers().MACTaken(n.VNI, mac), nil
}

// endpointAddr parses an endpoint address docker sent in CIDR form and checks
// it lies in one of the network's subnets of that family.
func endpointAddr(s string, subnets []store.Subnet, family string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, invalidf("endpoint %s address %q is not in CIDR form", family, s)
	}
	for _, sub := range subnets {
		if sub.Pool.Contains(p.Addr()) {
			return p, nil
		}
	}
	return netip.Prefix{}, invalidf("endpoint %s address %s is outside the network's %s subnets", family, p.Addr(), family)
}

// randomMAC returns a unicast, locally administered MAC address.
func randomMAC() (string, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return "", err
	}
	mac[0] = mac[0]&0xfe | 0x02
	return mac.String(), nil
}

// lookup returns the vxbridge network netID (an error if unknown) and its
// endpoint epID (nil if unknown).
func (d *Driver) lookup(netID, epID string) (*store.Network, *store.Endpoint, error) {
	n, err := d.network(netID)
	if err != nil {
		return nil, nil, err
	}
	ep, err := d.endpointOn(netID, epID)
	return n, ep, err
}

func (d *Driver) network(id string) (*store.Network, error) {
	n, err := d.store.Network(id)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return nil, invalidf("network %s is not a vxbridge network known to this host", short(id))
	}
	return n, nil
}

// CreateEndpoint makes the endpoint's veth pair, host end on the bridge.
func (d *Driver) CreateEndpoint(req *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	defer d.lockEndpoint(req.EndpointID)()
	n, ep, err := d.lookup(req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, err
	}
	makeVeth := d.ensureVeth // a replayed request: the veth may exist
	if ep == nil {
		if ep, err = d.newEndpoint(req, n); err != nil {
			return nil, err
		}
		makeVeth = d.addVeth
	} else if ep.NetworkID != n.ID {
		return nil, invalidf("endpoint %s already exists on network %s", short(ep.ID), short(ep.NetworkID))
	}
	if err := d.createEndpoint(n, ep, makeVeth); err != nil {
		return nil, err
	}
	resp := &network.CreateEndpointResponse{}
	// Echoing a field docker supplied makes it roll the endpoint back.
	if req.Interface == nil || req.Interface.MacAddress == "" {
		resp.Interface = &network.EndpointInterface{MacAddress: ep.MAC}
	}
	return resp, nil
}

func (d *Driver) createEndpoint(n *store.Network, ep *store.Endpoint,
	makeVeth func(*store.Network, *store.Endpoint) error) (retErr error) {
	if err := makeVeth(n, ep); err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			if links, err := d.linksOf(n); err == nil {
				d.logUndoErr("delete veth", links.DeleteLink(ep.HostVeth), "veth", ep.HostVeth)
			}
		}
	}()
	d.crash(CrashEndpointVeth)
	if err := d.store.SaveEndpoint(ep); err != nil {
		return err
	}
	d.addrs.add(ep)
	d.publishEndpoint(n, ep)
	d.crash(CrashEndpointSaved)
	d.log.Info("endpoint created", "network", short(n.ID), "endpoint", ep.ID, "veth", ep.HostVeth,
		"mac", ep.MAC, "ipv4", ep.IPv4, "ipv6", ep.IPv6)
	return nil
}

func (d *Driver) ensureVeth(n *store.Network, ep *store.Endpoint) error {
	return d.makeVeth(n, ep, Links.EnsureVeth)
}

// addVeth is ensureVeth for a new endpoint, whose veth most likely does not
// exist yet.
func (d *Driver) addVeth(n *store.Network, ep *store.Endpoint) error {
	return d.makeVeth(n, ep, Links.AddVeth)
}

// makeVeth makes ep's veth pair as Links' method ensure does (EnsureVeth or
// AddVeth).
func (d *Driver) makeVeth(n *store.Network, ep *store.Endpoint, ensure func(Links, bridge.VethConfig) error) error {
	mac, err := net.ParseMAC(ep.MAC)
	if err != nil {
		return fmt.Errorf("endpoint %s: stored mac %q: %w", short(ep.ID), ep.MAC, err)
	}
	links, err := d.linksOf(n)
	if err != nil {
		return err
	}
	peerNS := 0
	if n.NetNS != "" {
		peerNS = d.spaces.HostFd() // docker takes its end from its own namespace
	}
	err = ensure(links, bridge.VethConfig{
		PeerNS:   peerNS,
		HostName: ep.HostVeth,
		PeerName: ep.PeerVeth,
		Bridge:   n.Bridge,
		Alias:    d.endpointAlias(ep.ID),
		MTU:      n.MTU,
		MAC:      mac,
		Isolated: !n.ICC,
		Hairpin:  !n.Internal, // a container reaching its own published port
	})
	if errors.Is(err, netdev.ErrNotOwned) {
		// Veth names follow the endpoint id, so the user cannot pick
		// another; an interface with a vxbridge alias but no record is
		// removed by the reconciler, anything else is someone else's.
		return invalidf("%v: vxbridge never takes over an interface it does not own; remove it, or rename it, and retry", err)
	}
	return err
}

// DeleteEndpoint removes the veth pair; an unknown id is success.
func (d *Driver) DeleteEndpoint(req *network.DeleteEndpointRequest) error {
	defer d.lockEndpoint(req.EndpointID)()
	ep, err := d.endpointOn(req.NetworkID, req.EndpointID)
	if err != nil || ep == nil {
		return err
	}
	return d.deleteEndpoint(ep)
}

func (d *Driver) deleteEndpoint(ep *store.Endpoint) error {
	if err := d.store.DeleteEndpoint(ep.ID); err != nil {
		return err
	}
	d.addrs.remove(ep)
	d.crash(CrashEndpointDeleted)
	d.forgetName(ep.ID)
	d.withdrawEndpoint(ep)
	d.unpublishKernel(ep, ep.Ports) // docker revokes first; this is for when it did not
	// Deleting the host end takes the container end with it, wherever it
	// is. The kernel's part is batched in the background (RetireLink): the
	// record is gone, so should the plugin die first, Reconcile deletes it.
	links, err := d.linksOfNetwork(ep.NetworkID)
	if err == nil {
		err = links.RetireLink(ep.HostVeth)
	}
	d.logUndoErr("delete veth", err, "veth", ep.HostVeth)
	d.crash(CrashEndpointVethGone)
	d.log.Info("endpoint deleted", "network", short(ep.NetworkID), "endpoint", ep.ID, "veth", ep.HostVeth)
	return nil
}

// EndpointInfo reports operational data docker shows in inspect output.
func (d *Driver) EndpointInfo(req *network.InfoRequest) (*network.InfoResponse, error) {
	ep, err := d.store.Endpoint(req.EndpointID)
	if err != nil {
		return nil, err
	}
	value := map[string]string{}
	if ep != nil {
		value["vxbridge.host_veth"] = ep.HostVeth
		value["vxbridge.mac"] = ep.MAC
		if len(ep.Ports) > 0 {
			// Docker reads published ports only from its own drivers, so
			// this is where ephemeral host ports can be looked up.
			value[keyPortsInfo] = ports.List(ep.Ports)
		}
	}
	return &network.InfoResponse{Value: value}, nil
}

// Join hands docker the container end of the veth and the gateways.
func (d *Driver) Join(req *network.JoinRequest) (*network.JoinResponse, error) {
	defer d.lockEndpoint(req.EndpointID)()
	n, ep, err := d.lookup(req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, err
	}
	if ep == nil {
		return nil, invalidf("endpoint %s does not exist on network %s", short(req.EndpointID), short(n.ID))
	}
	if err := d.ensureVeth(n, ep); err != nil {
		return nil, err
	}
	ep.Joined, ep.Sandbox = true, req.SandboxKey
	if err := d.store.SaveEndpoint(ep); err != nil {
		return nil, err
	}
	d.crash(CrashJoinSaved)
	d.learnName(n, ep)
	resp := &network.JoinResponse{InterfaceName: network.InterfaceName{SrcName: ep.PeerVeth, DstPrefix: ContainerIfPrefix}}
	// An internal network has no way out: no default route for its containers.
	if !n.Internal {
		if gw := gateway(n, false); gw.IsValid() && ep.IPv4.IsValid() {
			resp.Gateway = gw.String()
		}
		if gw := gateway(n, true); gw.IsValid() && ep.IPv6.IsValid() {
			resp.GatewayIPv6 = gw.String()
		}
	}
	d.log.Info("endpoint joined", "network", short(n.ID), "endpoint", ep.ID, "sandbox", req.SandboxKey)
	return resp, nil
}

// Leave records that the endpoint left its sandbox; unknown ids are success.
func (d *Driver) Leave(req *network.LeaveRequest) error {
	defer d.lockEndpoint(req.EndpointID)()
	ep, err := d.endpointOn(req.NetworkID, req.EndpointID)
	if err != nil || ep == nil {
		return err
	}
	// Docker revokes the published ports first; should it not have, they
	// go with the sandbox.
	published := ep.Ports
	ep.Joined, ep.Sandbox, ep.Ports = false, "", nil
	if err := d.store.SaveEndpoint(ep); err != nil {
		return err
	}
	d.crash(CrashLeaveSaved)
	d.forgetName(ep.ID)
	d.unpublishKernel(ep, published)
	d.log.Info("endpoint left", "network", short(ep.NetworkID), "endpoint", ep.ID)
	return nil
}
