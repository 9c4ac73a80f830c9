package driver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/ipam"
	"github.com/vxbridge/vxbridge/ownership/mark"
	"github.com/vxbridge/vxbridge/peers"
	"github.com/vxbridge/vxbridge/vxlan"
)

type fakeCluster struct {
	mu        sync.Mutex
	claimed   map[uint32][]netip.Prefix
	claimErr  error
	published map[string]cluster.Endpoint
	rejoined  map[uint32]bool
	sinks     chan cluster.NetworkSink // each network followed
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{claimed: map[uint32][]netip.Prefix{}, published: map[string]cluster.Endpoint{},
		rejoined: map[uint32]bool{}, sinks: make(chan cluster.NetworkSink, 10)}
}

func (c *fakeCluster) HostID() string               { return "self" }
func (c *fakeCluster) Connected() (bool, string)    { return true, "" }
func (c *fakeCluster) OldHosts() []string           { return nil }
func (c *fakeCluster) WatchStats() (uint64, uint64) { return 0, 0 }
func (c *fakeCluster) ClaimNetwork(_ context.Context, n cluster.Network) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.claimErr != nil {
		return c.claimErr
	}
	c.claimed[n.VNI] = n.Subnets
	return nil
}
func (c *fakeCluster) LeaveNetwork(vni uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.claimed, vni)
}
func (c *fakeCluster) Rejoin(vni uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rejoined[vni] = true
}
func (c *fakeCluster) Publish(ep cluster.Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.published[ep.ID] = ep
}
func (c *fakeCluster) Withdraw(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.published, id)
}
func (c *fakeCluster) FollowNetwork(ctx context.Context, vni uint32, sink cluster.NetworkSink) {
	c.sinks <- sink
	<-ctx.Done()
}

type fakeVXLAN struct {
	mu      sync.Mutex
	devices map[string]vxlan.Device
	tables  map[string]vxlan.Table
	syncs   int
	limits  int
	block   chan struct{} // non-nil: Apply waits until it is closed
}

func (f *fakeVXLAN) EnsureDevice(d vxlan.Device) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.devices[d.Name] = d
	return nil
}
func (f *fakeVXLAN) DeleteDevice(name, alias string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d, ok := f.devices[name]; ok && d.Alias == alias {
		delete(f.devices, name)
		delete(f.tables, name)
	}
	return nil
}
func (f *fakeVXLAN) Entries(name string) (vxlan.Table, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.devices[name]; !ok {
		return vxlan.Table{}, fmt.Errorf("vxlan device %q does not exist", name)
	}
	return f.tables[name], nil
}
func (f *fakeVXLAN) Apply(name string, c vxlan.Changes) error {
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block != nil {
		<-block // a kernel write that hangs
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.devices[name]; !ok {
		return fmt.Errorf("vxlan device %q does not exist", name)
	}
	f.syncs++
	t := f.tables[name]
	fdb := map[string]netip.Addr{}
	for _, e := range t.FDB {
		fdb[e.MAC] = e.Dst
	}
	neigh := map[netip.Addr]string{}
	for _, e := range t.Neigh {
		neigh[e.IP] = e.MAC
	}
	for _, e := range c.DelFDB {
		delete(fdb, e.MAC)
	}
	for _, e := range c.DelNeigh {
		delete(neigh, e.IP)
	}
	for _, e := range c.SetFDB {
		fdb[e.MAC] = e.Dst
	}
	for _, e := range c.SetNeigh {
		neigh[e.IP] = e.MAC
	}
	var out vxlan.Table
	for mac, dst := range fdb {
		out.FDB = append(out.FDB, vxlan.FDB{MAC: mac, Dst: dst})
	}
	for ip, mac := range neigh {
		out.Neigh = append(out.Neigh, vxlan.Neigh{IP: ip, MAC: mac})
	}
	f.tables[name] = out
	return nil
}
func (f *fakeVXLAN) table(name string) vxlan.Table {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tables[name]
}
func (f *fakeVXLAN) EnsureNeighLimits(want int) (vxlan.NeighLimits, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.limits = want
	return vxlan.NeighLimits{}, false, nil
}

type fakeBlocks struct {
	mu         sync.Mutex
	held       map[netip.Prefix]bool
	prefetched chan netip.Prefix
	released   chan netip.Prefix
	lost       []ipam.LostBlock
}

func (b *fakeBlocks) Holds(p netip.Prefix) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held[p]
}
func (b *fakeBlocks) Prefetch(_ context.Context, p netip.Prefix) error {
	b.prefetched <- p
	return nil
}
func (b *fakeBlocks) ReleaseBlocks(_ context.Context, p netip.Prefix) error {
	b.released <- p
	return nil
}
func (b *fakeBlocks) LostBlocks() []ipam.LostBlock {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lost
}

type xhHarness struct {
	*harness
	cl     *fakeCluster
	vx     *fakeVXLAN
	blocks *fakeBlocks
	peers  *peers.Manager
}

func newXHHarness(t *testing.T) *xhHarness {
	t.Helper()
	h := &xhHarness{harness: newHarness(t), cl: newFakeCluster(),
		vx: &fakeVXLAN{devices: map[string]vxlan.Device{}, tables: map[string]vxlan.Table{}},
		blocks: &fakeBlocks{held: map[netip.Prefix]bool{netip.MustParsePrefix("10.42.0.0/24"): true}, prefetched: make(chan netip.Prefix, 10),
			released: make(chan netip.Prefix, 10)}}
	h.start(t)
	return h
}

// start makes the driver (again, as a restarted plugin would) with a fresh
// peers manager.
func (h *xhHarness) start(t *testing.T) {
	h.peers = peers.New(peers.Config{Self: "self", SelfVTEP: netip.MustParseAddr("192.0.2.1"), Source: h.cl,
		NeighLimits: func(n int) { h.vx.EnsureNeighLimits(n) }})
	t.Cleanup(h.peers.Close)
	h.d = New(Config{Store: h.st, Links: h.links, Firewall: h.fw, CrossHost: &CrossHostConfig{
		Cluster: h.cl, VXLAN: h.vx, Blocks: h.blocks, Peers: h.peers,
		VTEP: netip.MustParseAddr("192.0.2.1"), VTEPInterface: "eth0", UnderlayMTU: 1500, Port: 4789,
	}})
	t.Cleanup(h.d.Close)
}

// sink is the next network's sink the peers manager follows.
func (h *xhHarness) sink(t *testing.T) cluster.NetworkSink {
	t.Helper()
	select {
	case s := <-h.cl.sinks:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no network followed")
	}
	return nil
}

// waitTable waits until the device's table satisfies ok.
func (h *xhHarness) waitTable(t *testing.T, dev string, ok func(vxlan.Table) bool) vxlan.Table {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		tbl := h.vx.table(dev)
		if ok(tbl) {
			return tbl
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s: table %+v", dev, tbl)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func xhReq(vni string, mtu string) *network.CreateNetworkRequest {
	g := map[string]interface{}{OptVXLANID: vni}
	if mtu != "" {
		g[OptMTU] = mtu
	}
	return createReq(netA, "10.42.0.0/24", "10.42.0.1/24", g)
}

func TestVXLANIDNeedsEtcd(t *testing.T) {
	h := newHarness(t)
	err := h.d.CreateNetwork(xhReq("42", ""))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "--etcd-endpoints") || !strings.Contains(err.Error(), "vxlan.id=42") {
		t.Fatalf("vxlan.id without etcd: %v", err)
	}
	if len(h.links.Names()) != 0 {
		t.Fatalf("links left behind: %v", h.links.Names())
	}
	if c, _ := h.d.GetCapabilities(); c.ConnectivityScope != network.LocalScope || c.Scope != network.LocalScope {
		t.Fatalf("single-host capabilities: %+v", c)
	}
	if st, err := h.d.ClusterStatus(); st != nil || err != nil {
		t.Fatalf("single-host cluster status: %+v, %v", st, err)
	}
}

func TestVXLANIDValues(t *testing.T) {
	h := newXHHarness(t)
	for _, bad := range []string{"0", "16777216", "-1", "x", ""} {
		err := h.d.CreateNetwork(xhReq(bad, ""))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), OptVXLANID) {
			t.Errorf("vxlan.id=%q: %v", bad, err)
		}
	}
}

func TestCrossHostNetworkLifecycle(t *testing.T) {
	h := newXHHarness(t)
	if c, _ := h.d.GetCapabilities(); c.ConnectivityScope != network.GlobalScope || c.Scope != network.LocalScope {
		t.Fatalf("cross-host capabilities: %+v", c)
	}
	mustCreate(t, h.harness, xhReq("42", "9000"))
	dev, ok := h.vx.devices["vxv-2a"]
	if !ok {
		t.Fatalf("no vxlan device; devices %v", h.vx.devices)
	}
	want := vxlan.Device{Name: "vxv-2a", Alias: mark.Alias("", mark.VXLAN, netA), VNI: 42, Port: 4789, Local: netip.MustParseAddr("192.0.2.1"),
		Parent: "eth0", MTU: 1450, Bridge: "vxb-aaaaaaaaaaa"}
	if dev != want {
		t.Fatalf("device %+v\nwant %+v", dev, want)
	}
	if br := h.links.Bridges["vxb-aaaaaaaaaaa"]; br.MTU != 1450 {
		t.Fatalf("bridge mtu %d, want 1450 (underlay 1500 - 50, the asked 9000 does not fit)", br.MTU)
	}
	if got := h.cl.claimed[42]; len(got) != 1 || got[0] != netip.MustParsePrefix("10.42.0.0/24") {
		t.Fatalf("claimed %v", h.cl.claimed)
	}
	if p := <-h.blocks.prefetched; p != netip.MustParsePrefix("10.42.0.0/24") {
		t.Fatalf("prefetched %s", p)
	}

	// Endpoints are published when created and withdrawn when deleted.
	_, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epID(1),
		Interface: &network.EndpointInterface{Address: "10.42.0.5/24"}})
	if err != nil {
		t.Fatal(err)
	}
	ep := h.cl.published[epID(1)]
	if ep.VNI != 42 || ep.IPv4 != netip.MustParseAddr("10.42.0.5") || ep.MAC == "" {
		t.Fatalf("published %+v", ep)
	}
	if v := h.links.Veths["vxh"+short(epID(1))]; v.MTU != 1450 {
		t.Fatalf("veth mtu %d", v.MTU)
	}

	// The network's records program the device with the other hosts'
	// endpoints only, in the background.
	sink := h.sink(t)
	sink.Reset(cluster.NetworkState{VNI: 42, Members: []cluster.Member{
		{Host: "self", VTEP: netip.MustParseAddr("192.0.2.1")}, {Host: "h2", VTEP: netip.MustParseAddr("192.0.2.2")}},
		Endpoints: []cluster.Endpoint{{ID: epID(1), Host: "self", VNI: 42, MAC: ep.MAC, IPv4: ep.IPv4},
			{ID: "e2", Host: "h2", VNI: 42, MAC: "02:00:00:00:00:02", IPv4: netip.MustParseAddr("10.42.0.66")},
			{ID: "e3", Host: "h2", VNI: 42, MAC: "02:00:00:00:00:03", IPv4: ep.IPv4}}}) // claims this host's address: holds nothing, gets nothing
	h.waitTable(t, "vxv-2a", func(tbl vxlan.Table) bool {
		return len(tbl.FDB) == 1 && tbl.FDB[0].MAC == "02:00:00:00:00:02" && len(tbl.Neigh) == 1 && tbl.Neigh[0].IP == netip.MustParseAddr("10.42.0.66")
	})
	h.vx.mu.Lock()
	limits := h.vx.limits
	h.vx.mu.Unlock()
	if limits != 1 {
		t.Fatalf("neighbour limits checked for %d entries, want 1", limits)
	}
	h.blocks.mu.Lock()
	h.blocks.lost = []ipam.LostBlock{{Pool: netip.MustParsePrefix("10.42.0.0/24"), Block: netip.MustParsePrefix("10.42.0.0/26"), Holder: "h2",
		Addresses: []netip.Addr{netip.MustParseAddr("10.42.0.2")}}}
	h.blocks.mu.Unlock()
	st, err := h.d.ClusterStatus()
	if err != nil || st == nil || fmt.Sprint(st.LostBlocks) != "[{10.42.0.0/24 10.42.0.0/26 h2 [10.42.0.2]}]" {
		t.Fatalf("lost address blocks in the cluster status: %+v, %v", st, err)
	}
	if err != nil || st == nil || !st.Etcd.Connected || st.VTEP != "192.0.2.1" || st.FDBEntries != 1 || st.NeighborEntries != 1 ||
		len(st.Peers) != 1 || st.Peers[0].Host != "h2" || fmt.Sprint(st.Peers[0].Networks) != "[42]" ||
		len(st.Conflicts) != 1 || st.Conflicts[0].Endpoint != "h2/e3" || st.Conflicts[0].HeldBy != "self (this host)" {
		t.Fatalf("cluster status %+v, %v", st, err)
	}
	// The host goes: its entries go.
	sink.Apply([]cluster.Change{{Kind: cluster.MemberGone, Host: "h2"}})
	h.waitTable(t, "vxv-2a", func(tbl vxlan.Table) bool { return len(tbl.FDB)+len(tbl.Neigh) == 0 })

	if err := h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: epID(1)}); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.cl.published[epID(1)]; ok {
		t.Fatal("deleted endpoint still published")
	}
	if err := h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.vx.devices["vxv-2a"]; ok {
		t.Fatal("vxlan device kept after DeleteNetwork")
	}
	if _, ok := h.cl.claimed[42]; ok {
		t.Fatal("membership kept after DeleteNetwork")
	}
	if p := <-h.blocks.released; p != netip.MustParsePrefix("10.42.0.0/24") {
		t.Fatalf("released blocks of %s", p)
	}
}

func TestCrossHostRefusals(t *testing.T) {
	h := newXHHarness(t)
	// A pool of another IPAM driver.
	req := createReq(netA, "10.99.0.0/24", "10.99.0.1/24", map[string]interface{}{OptVXLANID: "42"})
	err := h.d.CreateNetwork(req)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "--ipam-driver vxbridge") || !strings.Contains(err.Error(), "10.99.0.0/24") {
		t.Fatalf("foreign pool: %v", err)
	}
	// The cluster disagrees: the error passes through, nothing is left.
	h.cl.claimErr = fmt.Errorf("%w: vxlan.id 42 is already used with subnet 10.1.0.0/24 (created on host h2); this network asks for subnet 10.42.0.0/24", cluster.ErrConflict)
	err = h.d.CreateNetwork(xhReq("42", ""))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "10.1.0.0/24") || !strings.Contains(err.Error(), "10.42.0.0/24") {
		t.Fatalf("conflict: %v", err)
	}
	// etcd away: a clear error, not ErrInvalid.
	h.cl.claimErr = fmt.Errorf("%w: context deadline exceeded", cluster.ErrUnavailable)
	err = h.d.CreateNetwork(xhReq("42", ""))
	if err == nil || errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "etcd must be reachable") {
		t.Fatalf("etcd down: %v", err)
	}
	if len(h.links.Names()) != 0 || len(h.vx.devices) != 0 {
		t.Fatalf("left behind: links %v devices %v", h.links.Names(), h.vx.devices)
	}
	// A second local network with the same VNI.
	h.cl.claimErr = nil
	mustCreate(t, h.harness, xhReq("42", ""))
	h.blocks.held[netip.MustParsePrefix("10.43.0.0/24")] = true
	err = h.d.CreateNetwork(createReq(netB, "10.43.0.0/24", "10.43.0.1/24", map[string]interface{}{OptVXLANID: "42"}))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), short(netA)) {
		t.Fatalf("same VNI twice on one host: %v", err)
	}
	if _, ok := h.cl.claimed[42]; !ok {
		t.Fatal("the refused duplicate took the first network's membership away")
	}
}

// TestCrossHostReconcile: after a restart the networks rejoin and the
// endpoints are published again; an orphan VXLAN device is removed.
func TestCrossHostReconcile(t *testing.T) {
	h := newXHHarness(t)
	mustCreate(t, h.harness, xhReq("42", ""))
	if _, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epID(1),
		Interface: &network.EndpointInterface{Address: "10.42.0.5/24"}}); err != nil {
		t.Fatal(err)
	}
	// The restarted plugin: a fresh cluster client, same store and kernel.
	h.cl = newFakeCluster()
	h.start(t)
	h.vx.tables["vxv-2a"] = vxlan.Table{FDB: []vxlan.FDB{{MAC: "02:00:00:00:00:09", Dst: netip.MustParseAddr("192.0.2.9")}}}
	h.links.Links["vxv-99"] = bridge.LinkInfo{Name: "vxv-99", Alias: mark.Alias("", mark.VXLAN, netB), Kind: "vxlan"}
	if _, err := h.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if !h.cl.rejoined[42] || h.cl.published[epID(1)].VNI != 42 {
		t.Fatalf("not re-published: rejoined %v published %v", h.cl.rejoined, h.cl.published)
	}
	sink := h.sink(t)
	time.Sleep(50 * time.Millisecond)
	if len(h.vx.table("vxv-2a").FDB) != 1 {
		t.Fatal("entries flushed before the network's first listing: known peers would be cut off while etcd is down")
	}
	sink.Reset(cluster.NetworkState{VNI: 42}) // etcd is back: the stale entry goes
	h.waitTable(t, "vxv-2a", func(tbl vxlan.Table) bool { return len(tbl.FDB) == 0 })
	if _, ok := h.links.Links["vxv-99"]; ok {
		t.Fatal("orphan vxlan device kept")
	}
}

// TestDockerCallsDoNotWaitForPeers: while peer programming hangs in the
// kernel, docker's calls on the same cross-host network (and a reconcile,
// and status) still return at once.
func TestDockerCallsDoNotWaitForPeers(t *testing.T) {
	h := newXHHarness(t)
	mustCreate(t, h.harness, xhReq("42", ""))
	sink := h.sink(t)
	h.vx.mu.Lock()
	h.vx.block = make(chan struct{})
	h.vx.mu.Unlock()
	defer close(h.vx.block)
	var eps []cluster.Endpoint
	for i := range 200 {
		eps = append(eps, cluster.Endpoint{ID: fmt.Sprint("r", i), Host: "h2", VNI: 42, MAC: fmt.Sprintf("02:00:00:00:01:%02x", i),
			IPv4: netip.AddrFrom4([4]byte{10, 42, 0, byte(i + 50)})})
	}
	sink.Reset(cluster.NetworkState{VNI: 42, Members: []cluster.Member{{Host: "h2", VTEP: netip.MustParseAddr("192.0.2.2")}}, Endpoints: eps})
	time.Sleep(50 * time.Millisecond) // the follower is now stuck in the kernel
	start := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); dockerCalls(t, h, sink) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatalf("5 endpoint lifecycles, a reconcile and a status still running after %s while peer programming hung", time.Since(start))
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("5 endpoint lifecycles, a reconcile and a status took %s while peer programming hung", d)
	}
}

func dockerCalls(t *testing.T, h *xhHarness, sink cluster.NetworkSink) {
	for i := 1; i <= 5; i++ {
		if _, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epID(i),
			Interface: &network.EndpointInterface{Address: fmt.Sprintf("10.42.0.%d/24", i+1)}}); err != nil {
			t.Error(err)
			return
		}
		if _, err := h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: epID(i), SandboxKey: "/var/run/docker/netns/x"}); err != nil {
			t.Error(err)
			return
		}
		sink.Apply([]cluster.Change{{Kind: cluster.EndpointGone, Host: "h2", ID: fmt.Sprint("r", i)}})
	}
	if _, err := h.d.Reconcile(); err != nil {
		t.Error(err)
	}
	if _, err := h.d.ClusterStatus(); err != nil {
		t.Error(err)
	}
}
