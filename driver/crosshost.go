package driver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/internal/netdev"
	"github.com/vxbridge/vxbridge/peers"
	"github.com/vxbridge/vxbridge/store"
	"github.com/vxbridge/vxbridge/vxlan"
)

// Cross-host networks. A network created with -o vxlan.id=N is one L2
// segment over every host that creates it with the same VNI and subnet: its
// bridge gets a VXLAN device as a port, and the device's FDB and neighbour
// entries point at the endpoints of the other hosts, as package peers
// programs them from the network's records in etcd, outside the driver's
// lock. The hooks below are called from the single-host lifecycle
// (driver.go, endpoint.go, reconcile.go) and do nothing for local networks.
//
// etcd is waited for only by CreateNetwork of a cross-host network (the
// cluster-wide consistency check), and outside d.mu, so calls for other
// networks go on meanwhile. Endpoints are published in the background;
// container start never waits for etcd.

// claimTimeout bounds the etcd check of a cross-host CreateNetwork.
const claimTimeout = 10 * time.Second

type crossHost struct {
	cfg CrossHostConfig

	// ctx ends the background etcd calls (block prefetch and release) when
	// the driver closes; bg waits for them.
	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup

	mu    sync.Mutex                          // guards local and names
	local map[uint32]map[string]localEndpoint // this host's endpoints by network and id
	names map[string]*epName                  // joined endpoints' names, by id (names.go)
	// hostAddrs are this host's own addresses in each cross-host network
	// (hostreach.go), by network id; seeking marks the networks whose
	// addresses are being taken.
	hostAddrs map[string][]netip.Addr
	seeking   map[string]bool
	hostRecs  map[string]cluster.Endpoint // the host records published, by network id
}

// localEndpoint is what peers must not claim of one of this host's own
// endpoints.
type localEndpoint struct {
	ips []netip.Addr
	mac string
}

func newCrossHost(cfg *CrossHostConfig) *crossHost {
	if cfg == nil {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &crossHost{cfg: *cfg, ctx: ctx, cancel: cancel, local: map[uint32]map[string]localEndpoint{}, names: map[string]*epName{},
		hostAddrs: map[string][]netip.Addr{}, seeking: map[string]bool{}, hostRecs: map[string]cluster.Endpoint{}}
}

// close ends the background etcd calls and waits for them.
func (x *crossHost) close() {
	if x != nil {
		x.cancel()
		x.bg.Wait()
	}
}

// background runs fn with a context bounded by claimTimeout and by the
// driver's life.
func (x *crossHost) background(fn func(ctx context.Context)) {
	x.bg.Add(1)
	go func() {
		defer x.bg.Done()
		ctx, cancel := context.WithTimeout(x.ctx, claimTimeout)
		defer cancel()
		fn(ctx)
	}()
}

// The components of the cross-host configuration; only when d.xh != nil.
func (d *Driver) cluster() Cluster      { return d.xh.cfg.Cluster }
func (d *Driver) blocks() AddressBlocks { return d.xh.cfg.Blocks }
func (d *Driver) hostVXLAN() VXLAN      { return d.xh.cfg.VXLAN }
func (d *Driver) peers() Peers          { return d.xh.cfg.Peers }

// connectivityScope is "global" when cross-host networks are configured:
// docker then knows a network of this driver may span hosts. Scope stays
// "local": every host creates the network itself, no swarm involved.
func (d *Driver) connectivityScope() string {
	if d.xh != nil {
		return network.GlobalScope
	}
	return network.LocalScope
}

func parseVNI(key, val string) (uint32, error) {
	v, err := strconv.ParseUint(val, 10, 32)
	if err != nil || !vxlan.ValidVNI(v) {
		return 0, invalidf("option %s=%q: want a VXLAN network identifier from 1 to %d", key, val, vxlan.MaxVNI)
	}
	return uint32(v), nil
}

// claimCrossHost checks a cross-host network before anything is built: etcd
// configured, addresses from vxbridge's IPAM, an MTU that fits the underlay,
// and the cluster's agreement on its VNI and subnets. It runs without d.mu.
func (d *Driver) claimCrossHost(n *store.Network) error {
	if n.VNI == 0 {
		return nil
	}
	if d.xh == nil {
		return invalidf("option %s=%d makes a cross-host network, which needs etcd: start vxbridge serve with --etcd-endpoints", OptVXLANID, n.VNI)
	}
	cfg := &d.xh.cfg
	if err := d.checkLocalVNI(n); err != nil {
		return err
	}
	if len(n.IPv4) == 0 && len(n.IPv6) == 0 {
		return invalidf("a cross-host network (-o %s) needs a subnet", OptVXLANID)
	}
	for _, s := range n.Subnets() {
		if !cfg.Blocks.Holds(s.Pool) {
			return invalidf("a cross-host network (-o %s=%d) needs addresses that are unique across hosts, from vxbridge's IPAM: subnet %s came from another IPAM driver; create the network with --ipam-driver vxbridge",
				OptVXLANID, n.VNI, s.Pool)
		}
	}
	mtu := vxlan.MTU(cfg.UnderlayMTU, n.MTU)
	if n.MTU > mtu {
		d.log.Warn("mtu lowered to fit the vxlan encapsulation", "network", short(n.ID), "asked", n.MTU, "mtu", mtu,
			"underlay", cfg.VTEPInterface, "underlay_mtu", cfg.UnderlayMTU)
	}
	n.MTU = mtu
	if len(n.IPv6) > 0 && n.MTU < minMTUIPv6 {
		return invalidf("cross-host IPv6 network: mtu %d (underlay %s mtu %d minus %d for VXLAN) is below %d",
			n.MTU, cfg.VTEPInterface, cfg.UnderlayMTU, vxlan.Overhead, minMTUIPv6)
	}
	cn := cluster.Network{VNI: n.VNI}
	for _, s := range n.Subnets() {
		cn.Subnets = append(cn.Subnets, s.Pool)
	}
	ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
	defer cancel()
	err := cfg.Cluster.ClaimNetwork(ctx, cn)
	if errors.Is(err, cluster.ErrConflict) {
		return invalidf("%v", err)
	}
	if err != nil {
		return fmt.Errorf("cross-host network %s=%d: etcd must be reachable to create it: %w", OptVXLANID, n.VNI, err)
	}
	return nil
}

// checkLocalVNI refuses a VNI another network of this host already has.
func (d *Driver) checkLocalVNI(n *store.Network) error {
	nets, err := d.store.Networks()
	if err != nil {
		return err
	}
	for _, other := range nets {
		if other.VNI == n.VNI && other.ID != n.ID {
			return invalidf("option %s=%d: vxbridge network %s on this host already has that VXLAN id", OptVXLANID, n.VNI, short(other.ID))
		}
	}
	return nil
}

// unclaimCrossHost undoes claimCrossHost after a failed create, unless the
// network was already stored (a replayed create).
func (d *Driver) unclaimCrossHost(n *store.Network) {
	if n.VNI == 0 || d.xh == nil {
		return
	}
	if existing, err := d.store.Network(n.ID); err == nil && existing != nil {
		return
	}
	d.cluster().LeaveNetwork(n.VNI)
}

// ensureVXLAN makes the network's VXLAN device and has its peers followed
// and programmed (in the background, by package peers).
func (d *Driver) ensureVXLAN(n *store.Network) error {
	if n.VNI == 0 {
		return nil
	}
	if d.xh == nil {
		return fmt.Errorf("network %s is cross-host (%s=%d) but vxbridge runs without --etcd-endpoints: its containers reach this host only",
			short(n.ID), OptVXLANID, n.VNI)
	}
	vx, err := d.vxlanOf(n)
	if err != nil {
		return err
	}
	err = vx.EnsureDevice(d.vxlanDevice(n))
	if errors.Is(err, netdev.ErrNotOwned) {
		return invalidf("%v: remove it or use another %s", err, OptVXLANID)
	}
	if err != nil {
		return fmt.Errorf("vxlan device of network %s: %w", short(n.ID), err)
	}
	d.peers().Attach(d.peerNetwork(n, vx))
	return nil
}

// peerNetwork is what package peers needs of network n.
func (d *Driver) peerNetwork(n *store.Network, vx VXLAN) peers.Network {
	pn := peers.Network{ID: n.ID, VNI: n.VNI, Device: vxlan.DeviceName(n.VNI), Kernel: vx}
	for _, s := range n.Subnets() {
		pn.Subnets = append(pn.Subnets, s.Pool)
		if s.Gateway.IsValid() {
			pn.Gateways = append(pn.Gateways, s.Gateway.Addr())
		}
	}
	return pn
}

// vxlanOf returns the VXLAN interface of the namespace where network n's
// device is: its own namespace when it has one (the device is created in
// the host's and moved there), made again if it is missing.
func (d *Driver) vxlanOf(n *store.Network) (VXLAN, error) {
	if n.NetNS == "" {
		return d.hostVXLAN(), nil
	}
	ns, err := d.ensureNetNS(n)
	if err != nil {
		return nil, err
	}
	return ns.VXLAN(), nil
}

// openVXLAN is vxlanOf without making a lost namespace again: found is
// false then (the device went with it).
func (d *Driver) openVXLAN(n *store.Network) (vx VXLAN, found bool, err error) {
	if n.NetNS == "" {
		return d.hostVXLAN(), true, nil
	}
	ns, found, err := d.openNetNS(n)
	if err != nil || !found {
		return nil, false, err
	}
	return ns.VXLAN(), true, nil
}

func (d *Driver) vxlanDevice(n *store.Network) vxlan.Device {
	c := d.xh.cfg
	return vxlan.Device{
		Name: vxlan.DeviceName(n.VNI), Alias: d.vxlanAlias(n.ID), VNI: n.VNI, Port: c.Port,
		Local: c.VTEP, Parent: c.VTEPInterface, MTU: n.MTU, Bridge: n.Bridge, Isolated: !n.ICC, OnDemand: c.OnDemand,
	}
}

// teardownCrossHost removes the VXLAN device and ends the membership.
func (d *Driver) teardownCrossHost(n *store.Network) {
	if n.VNI == 0 || d.xh == nil {
		return // an orphan device goes with the next reconcile
	}
	d.peers().Detach(n.VNI)
	d.forgetHostReach(n)
	d.xh.mu.Lock()
	delete(d.xh.local, n.VNI)
	d.xh.mu.Unlock()
	if vx, found, err := d.openVXLAN(n); err != nil {
		d.logUndoErr("delete vxlan device", err, "vni", n.VNI)
	} else if found {
		d.logUndoErr("delete vxlan device", vx.DeleteDevice(vxlan.DeviceName(n.VNI), d.vxlanAlias(n.ID)), "vni", n.VNI)
	}
	d.cluster().LeaveNetwork(n.VNI)
	// Its address blocks go back to the cluster, in the background: a
	// subnet must not be used up by hosts that once had the network.
	for _, s := range n.Subnets() {
		d.xh.background(func(ctx context.Context) {
			if err := d.blocks().ReleaseBlocks(ctx, s.Pool); err != nil {
				d.log.Warn("address blocks not given back; they stay this host's", "pool", s.Pool, "err", err)
			}
		})
	}
}

// crossHostCreated runs after a cross-host network is stored: an address
// block is leased ahead of the first container, in the background.
func (d *Driver) crossHostCreated(n *store.Network) {
	if n.VNI == 0 || d.xh == nil {
		return
	}
	d.seekHostAddrs(n)
	for _, s := range n.Subnets() {
		d.xh.background(func(ctx context.Context) {
			if err := d.blocks().Prefetch(ctx, s.Pool); err != nil {
				d.log.Warn("no address block leased ahead; the first container will ask etcd", "pool", s.Pool, "err", err)
			}
		})
	}
}

// publishEndpoint hands a cross-host endpoint to the cluster and tells the
// network's peers it is this host's (no waiting).
func (d *Driver) publishEndpoint(n *store.Network, ep *store.Endpoint) {
	if n.VNI == 0 || d.xh == nil {
		return
	}
	d.cluster().Publish(d.withName(endpointRecord(n, ep)))
	le := localEndpoint{mac: ep.MAC}
	for _, p := range []netip.Prefix{ep.IPv4, ep.IPv6} {
		if p.IsValid() {
			le.ips = append(le.ips, p.Addr())
		}
	}
	d.setLocal(n.VNI, func(m map[string]localEndpoint) { m[ep.ID] = le })
}

// withdrawEndpoint takes an endpoint out of the cluster (no waiting);
// harmless for endpoints that were never published.
func (d *Driver) withdrawEndpoint(ep *store.Endpoint) {
	if d.xh == nil {
		return
	}
	d.cluster().Withdraw(ep.ID)
	d.xh.mu.Lock()
	var vnis []uint32
	for vni, m := range d.xh.local {
		if _, ok := m[ep.ID]; ok {
			vnis = append(vnis, vni)
		}
	}
	d.xh.mu.Unlock()
	for _, vni := range vnis {
		d.setLocal(vni, func(m map[string]localEndpoint) { delete(m, ep.ID) })
	}
}

// setLocal changes this host's endpoints of network vni and hands the
// result to its peers' follower (which only queues it).
func (d *Driver) setLocal(vni uint32, change func(map[string]localEndpoint)) {
	d.xh.mu.Lock()
	m := d.xh.local[vni]
	if m == nil {
		m = map[string]localEndpoint{}
		d.xh.local[vni] = m
	}
	change(m)
	var ips []netip.Addr
	var macs []string
	for _, le := range m {
		ips = append(ips, le.ips...)
		macs = append(macs, le.mac)
	}
	d.xh.mu.Unlock()
	d.peers().SetLocal(vni, ips, macs)
}

// reconcileCrossHost re-publishes this host's cross-host networks and
// endpoints (after a restart the cluster client starts empty) and has every
// network's VXLAN device compared with its records (in the background).
// d.mu held.
func (d *Driver) reconcileCrossHost(nets []store.Network, eps []store.Endpoint) {
	if d.xh == nil {
		return
	}
	byID := map[string]*store.Network{}
	for i := range nets {
		if nets[i].VNI != 0 {
			byID[nets[i].ID] = &nets[i]
			d.cluster().Rejoin(nets[i].VNI)
			d.seekHostAddrs(&nets[i])
			d.publishHost(&nets[i])
		}
	}
	for i := range eps {
		if n := byID[eps[i].NetworkID]; n != nil {
			d.publishEndpoint(n, &eps[i])
			d.learnName(n, &eps[i])
		}
	}
	d.peers().Resync()
}
