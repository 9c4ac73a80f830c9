// Package driver orchestrates vxbridge's network and endpoint lifecycle. It
// implements docker's NetworkDriver API (go-plugins-helpers network.Driver) and
// talks to the kernel, firewall and store only through the small interfaces of
// interfaces.go, so it is tested against fakes without root.
//
// Crash safety: creates build kernel objects first and write the record last;
// deletes drop the record first and the kernel objects after. A crash in
// between leaves kernel objects that no record claims, and Reconcile (run at
// start-up) removes exactly those: every link vxbridge makes carries an alias
// naming its owner, every firewall rule a comment naming its network.
//
// One job per file: driver.go the Driver and the network lifecycle;
// endpoint.go the endpoint lifecycle; publish.go published ports (their
// pure side and the host port choice are package driver/ports);
// reconcile.go the reconcile pass, reconciler.go the loop that runs it;
// netns.go namespace placement; crosshost.go cross-host networks; status.go
// and status_rows.go the status report; orphans.go (with addrindex.go) the
// deletes package orphans asks for; options.go the network options;
// interfaces.go and interfaces_crosshost.go the components driven;
// crash.go the crash points.
package driver

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/driver/ports"
	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/internal/keylock"
	"github.com/vxbridge/vxbridge/internal/netdev"
	"github.com/vxbridge/vxbridge/ipam"
	"github.com/vxbridge/vxbridge/store"
)

// Config wires a Driver to the components it drives (interfaces.go).
type Config struct {
	Store    Store
	Links    Links
	Firewall Firewall
	Logger   *slog.Logger
	// OnReconcile, if set, is called after every reconcile run (metrics).
	OnReconcile func(err error)
	// CrossHost turns on cross-host networks (-o vxlan.id); nil without etcd.
	CrossHost *CrossHostConfig
	// Ports holds published host ports (package portproxy); nil: none are
	// held or relayed, only the firewall publishes.
	Ports ports.Reserver
	// Namespaces gives cross-host networks a namespace of their own
	// (netns.go); nil: they live in the host's, as networks made before.
	Namespaces Namespaces
	// Crash is the test-only crash hook (crash.go): called at each crash
	// point. Release builds leave it nil.
	Crash func(point string)
	// Identity is the state file's (store.DB.Identity): the links, rules
	// and namespaces made carry it, and only those the reconciler may
	// delete (marks.go). "": the marks of before identities.
	Identity string
	// LegacyOwned: objects carrying no identity were made from this state
	// (its file predates identities and holds records, store.Origin).
	LegacyOwned bool
}

// Driver implements network.Driver.
type Driver struct {
	store Store
	links Links
	fw    Firewall
	log   *slog.Logger
	// mu orders whole-state work against endpoint calls: network create
	// and delete, Reconcile, DeleteEndpointsIf, DeleteNetworksIf, Status
	// and the cross-host sync hold it exclusively; endpoint calls hold it
	// shared plus their endpoint's lock in eps, so calls on different
	// endpoints run in parallel (their kernel work, a veth each, does not
	// overlap).
	mu     sync.RWMutex
	eps    keylock.Map
	portMu sync.Mutex // publishing: the cross-endpoint port check, until the record is saved
	addrs  addrIndex  // endpoint addresses -> records holding them
	macGen func() (string, error)

	reconciler  *reconciler // RunReconciler's loop and what starts it
	onReconcile func(error)
	xh          *crossHost // nil: single-host only

	hostPorts *ports.Allocator
	spaces    Namespaces // nil: no network has a namespace of its own
	crashHook func(point string)
	owners    owners // whose kernel objects it may change (marks.go)
	lastKept  atomic.Pointer[[]string]
}

var _ network.Driver = (*Driver)(nil)

// New returns a driver; call Reconcile before serving requests.
func New(cfg Config) *Driver {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Driver{store: cfg.Store, links: cfg.Links, fw: cfg.Firewall, log: log, macGen: randomMAC,
		owners:      owners{identity: cfg.Identity, legacy: cfg.LegacyOwned},
		onReconcile: cfg.OnReconcile, xh: newCrossHost(cfg.CrossHost), hostPorts: ports.NewAllocator(cfg.Ports), crashHook: cfg.Crash, spaces: cfg.Namespaces}
	// d.fw read at each call: a method value of a nil Firewall (tests that
	// need no firewall) would panic here.
	d.reconciler = newReconciler(d.Reconcile, func() error { return d.fw.EnsureJumps() }, log)
	return d
}

// Close ends the driver's background etcd calls (address block prefetch
// and release after a network's create and delete) and waits for them.
func (d *Driver) Close() { d.xh.close() }

// lockEndpoint holds d.mu shared and endpoint id's own lock, and returns
// the function that releases both.
func (d *Driver) lockEndpoint(id string) (unlock func()) {
	d.mu.RLock()
	unlockEp := d.eps.Lock(id)
	return func() {
		unlockEp()
		d.mu.RUnlock()
	}
}

// GetCapabilities: each host creates its own networks.
func (d *Driver) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: network.LocalScope, ConnectivityScope: d.connectivityScope()}, nil
}

// CreateNetwork builds the network's bridge and firewall rules, then stores it.
func (d *Driver) CreateNetwork(req *network.CreateNetworkRequest) (retErr error) {
	n, err := parseNetwork(req)
	if err != nil {
		return err
	}
	// The cluster check of a cross-host network waits for etcd: not under d.mu.
	if err := d.claimCrossHost(n); err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			d.unclaimCrossHost(n)
		}
	}()
	d.mu.Lock()
	defer d.mu.Unlock()
	existing, err := d.store.Network(n.ID)
	if err != nil {
		return err
	}
	if existing != nil {
		// A replayed request: converge the kernel and answer the same.
		return d.ensureNetwork(existing)
	}
	if err := d.checkConflicts(n); err != nil {
		return err
	}
	d.placeNetwork(n)
	// Teardown touches only what carries this network's id (the bridge alias,
	// the rule comments), and checkConflicts made sure nothing did before.
	defer func() {
		if retErr != nil {
			d.teardownNetwork(n)
		}
	}()
	if err := d.ensureNetwork(n); err != nil {
		return err
	}
	d.crash(CrashNetworkKernel)
	if err := d.store.SaveNetwork(n); err != nil {
		return err
	}
	d.crossHostCreated(n)
	d.crash(CrashNetworkSaved)
	d.log.Info("network created", "network", n.ID, "bridge", n.Bridge, "subnets", subnetList(n),
		"mtu", n.MTU, "icc", n.ICC, "masquerade", n.Masquerade, "internal", n.Internal)
	return nil
}

// checkConflicts refuses a network whose bridge name or subnets another
// vxbridge network already uses.
func (d *Driver) checkConflicts(n *store.Network) error {
	if err := d.dropOrphanNetworks(n); err != nil {
		return err
	}
	nets, err := d.store.Networks()
	if err != nil {
		return err
	}
	for i := range nets {
		other := &nets[i]
		if other.Bridge == n.Bridge {
			return invalidf("bridge name %q is already used by vxbridge network %s", n.Bridge, short(other.ID))
		}
		if mine, theirs, ok := overlapping(n, other); ok {
			return invalidf("subnet %s overlaps subnet %s of vxbridge network %s (bridge %s)", mine, theirs, short(other.ID), other.Bridge)
		}
	}
	info, exists, err := d.links.Link(n.Bridge)
	if err != nil {
		return err
	}
	if exists && info.Alias != d.netAlias(n.ID) {
		return d.bridgeTaken(n, info)
	}
	return d.checkHostRoutes(n)
}

// checkHostRoutes refuses a network whose subnet overlaps one of the
// host's addresses or routes (ipam.CheckRoutes), naming it: with docker's
// IPAM, vxbridge's never saw the subnet. Recorded networks' overlaps were
// refused already, and a replayed create never gets here.
func (d *Driver) checkHostRoutes(n *store.Network) error {
	routes, err := d.links.Routes()
	if err != nil {
		return fmt.Errorf("list the host's routes and addresses: %w", err)
	}
	for _, s := range n.Subnets() {
		if err := ipam.CheckRoutes(s.Pool, routes, nil); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	return nil
}

// dockerSpaces are the address spaces of docker's built-in IPAM, which
// refuses a pool overlapping one it holds in the same space.
var dockerSpaces = map[string]bool{"LocalDefault": true, "GlobalDefault": true}

// dropOrphanNetworks deletes the stored networks docker no longer has, as n
// shows: n's subnet comes from docker's own IPAM, which refuses a pool
// overlapping one it holds, so an endpoint-less network whose overlapping
// subnet came from the same space of docker's IPAM is one docker released.
// That is what a crash between storing a CreateNetwork and replying leaves
// (docker's retry fails, docker releases its pool and never sends
// DeleteNetwork; with vxbridge's IPAM, package orphans catches it at once).
// d.mu held.
func (d *Driver) dropOrphanNetworks(n *store.Network) error {
	nets, err := d.store.Networks()
	if err != nil {
		return err
	}
	var used map[string]bool
	for i := range nets {
		other := &nets[i]
		if !sameDockerSpaceOverlap(n, other) {
			continue
		}
		if used == nil {
			eps, err := d.store.Endpoints()
			if err != nil {
				return err
			}
			used = map[string]bool{}
			for _, ep := range eps {
				used[ep.NetworkID] = true
			}
		}
		if used[other.ID] {
			continue
		}
		if err := d.deleteNetwork(other); err != nil {
			return err
		}
		d.log.Warn("network deleted: docker's IPAM gave its subnet to a new network, so docker no longer has it (a create whose reply a crash cut off)",
			"network", other.ID, "new_network", n.ID)
	}
	return nil
}

// sameDockerSpaceOverlap: a subnet of n and one of other overlap and both
// came from the same address space of docker's built-in IPAM.
func sameDockerSpaceOverlap(n, other *store.Network) bool {
	for _, a := range n.Subnets() {
		for _, b := range other.Subnets() {
			if dockerSpaces[a.AddressSpace] && a.AddressSpace == b.AddressSpace && a.Pool.Overlaps(b.Pool) {
				return true
			}
		}
	}
	return false
}

// ensureNetwork makes the kernel match the network record. Idempotent.
func (d *Driver) ensureNetwork(n *store.Network) error {
	if err := d.ensureDevices(n); err != nil {
		return err
	}
	if err := d.fw.EnsureNetwork(d.firewallNetwork(n)); err != nil {
		return fmt.Errorf("firewall rules of network %s: %w", short(n.ID), err)
	}
	return d.enableForwarding(n)
}

// ensureNetworkLinks is ensureNetwork but for the firewall rules, which
// Reconcile makes for all networks at once.
func (d *Driver) ensureNetworkLinks(n *store.Network) error {
	if err := d.ensureDevices(n); err != nil {
		return err
	}
	return d.enableForwarding(n)
}

// ensureDevices makes the network's bridge (or namespace and gateway link)
// and VXLAN device.
func (d *Driver) ensureDevices(n *store.Network) error {
	if err := d.ensureBridge(n); err != nil {
		if errors.Is(err, netdev.ErrNotOwned) {
			return invalidf("%v: choose another name with -o %s=NAME", err, OptBridgeName)
		}
		return err
	}
	return d.ensureVXLAN(n)
}

func (d *Driver) enableForwarding(n *store.Network) error {
	if n.Internal {
		return nil
	}
	return d.links.EnableForwarding(len(n.IPv6) > 0)
}

func (d *Driver) bridgeConfig(n *store.Network) bridge.BridgeConfig {
	cfg := bridge.BridgeConfig{Name: n.Bridge, Alias: d.netAlias(n.ID), MTU: n.MTU}
	for _, s := range n.Subnets() {
		if s.Gateway.IsValid() {
			cfg.Addrs = append(cfg.Addrs, s.Gateway)
		}
	}
	cfg.Addrs = append(cfg.Addrs, d.hostPrefixes(n)...)
	return cfg
}

func (d *Driver) firewallNetwork(n *store.Network) firewall.Network {
	fn := firewall.Network{ID: n.ID, Bridge: n.Bridge, Internal: n.Internal, Masquerade: n.Masquerade, ICC: n.ICC}
	if n.VNI != 0 && d.xh != nil {
		fn.NamesPort, fn.HostAddrs = d.xh.cfg.NamesPort, d.hostAddrsOf(n.ID)
		for _, s := range n.Subnets() {
			if s.Gateway.IsValid() {
				fn.Gateways = append(fn.Gateways, s.Gateway.Addr())
			}
		}
	}
	for _, s := range n.Subnets() {
		fn.Subnets = append(fn.Subnets, s.Pool)
	}
	return fn
}

// DeleteNetwork removes the network; an unknown id is success (docker sends
// deletes for networks the plugin may never have seen).
func (d *Driver) DeleteNetwork(req *network.DeleteNetworkRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, err := d.store.Network(req.NetworkID)
	if err != nil || n == nil {
		return err
	}
	return d.deleteNetwork(n)
}

// deleteNetwork removes network n and its endpoints. d.mu held.
func (d *Driver) deleteNetwork(n *store.Network) error {
	// Endpoints docker forgot (it ignores our delete errors) go with their network.
	eps, err := d.store.Endpoints()
	if err != nil {
		return err
	}
	for i := range eps {
		if eps[i].NetworkID == n.ID {
			if err := d.deleteEndpoint(&eps[i]); err != nil {
				return err
			}
		}
	}
	if err := d.store.DeleteNetwork(n.ID); err != nil {
		return err
	}
	d.crash(CrashNetworkDeleted)
	d.teardownNetwork(n)
	d.log.Info("network deleted", "network", n.ID, "bridge", n.Bridge)
	return nil
}

// teardownNetwork removes the kernel side of a network, logging failures:
// what it leaves behind, Reconcile removes.
func (d *Driver) teardownNetwork(n *store.Network) {
	d.teardownCrossHost(n)
	d.logUndoErr("remove firewall rules", d.fw.RemoveNetwork(n.ID), "network", n.ID)
	d.deleteBridge(n)
}

// logUndoErr logs err, if any, of an undo step (a rollback or a teardown)
// and goes on: the caller's own error, if any, is what it returns, and
// what the undo left behind the reconciler removes.
func (d *Driver) logUndoErr(what string, err error, args ...any) {
	if err != nil {
		d.log.Error(what+" failed; the next reconcile retries", append(args, "err", err)...)
	}
}

// AllocateNetwork is a swarm-manager call for global-scope drivers only.
func (d *Driver) AllocateNetwork(*network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	return nil, errors.New("vxbridge is a local-scope driver: swarm network allocation is not supported")
}

// FreeNetwork is the swarm counterpart of AllocateNetwork; nothing to free.
func (d *Driver) FreeNetwork(*network.FreeNetworkRequest) error { return nil }

// DiscoverNew is sent for swarm discovery events, which vxbridge does not use.
func (d *Driver) DiscoverNew(*network.DiscoveryNotification) error { return nil }

// DiscoverDelete is sent for swarm discovery events, which vxbridge does not use.
func (d *Driver) DiscoverDelete(*network.DiscoveryNotification) error { return nil }

func short(id string) string { return id[:min(12, len(id))] }

func subnetList(n *store.Network) []string {
	var out []string
	for _, s := range n.Subnets() {
		out = append(out, s.Pool.String())
	}
	return out
}

// gateway returns the network's gateway of the family of a, if any.
func gateway(n *store.Network, v6 bool) netip.Addr {
	subnets := n.IPv4
	if v6 {
		subnets = n.IPv6
	}
	for _, s := range subnets {
		if s.Gateway.IsValid() {
			return s.Gateway.Addr()
		}
	}
	return netip.Addr{}
}
