package driver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/vxlan"
)

type fakeCluster struct {
	mu        sync.Mutex
	claimed   map[uint32][]netip.Prefix
	claimErr  error
	published map[string]cluster.Endpoint
	rejoined  map[uint32]bool
	watchFn   func(cluster.View)
	watching  chan struct{}
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{claimed: map[uint32][]netip.Prefix{}, published: map[string]cluster.Endpoint{},
		rejoined: map[uint32]bool{}, watching: make(chan struct{})}
}

func (c *fakeCluster) HostID() string            { return "self" }
func (c *fakeCluster) Connected() (bool, string) { return true, "" }
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
func (c *fakeCluster) Watch(ctx context.Context, fn func(cluster.View)) {
	c.mu.Lock()
	c.watchFn = fn
	c.mu.Unlock()
	close(c.watching)
	<-ctx.Done()
}

type fakeVXLAN struct {
	mu      sync.Mutex
	devices map[string]vxlan.Device
	tables  map[string]vxlan.Table
	syncs   int
	limits  int
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
func (f *fakeVXLAN) Sync(name string, t vxlan.Table) (vxlan.Changes, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.devices[name]; !ok {
		return vxlan.Changes{}, fmt.Errorf("vxlan device %q does not exist", name)
	}
	f.syncs++
	c := vxlan.Plan(t, f.tables[name])
	f.tables[name] = t
	return c, nil
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

type xhHarness struct {
	*harness
	cl     *fakeCluster
	vx     *fakeVXLAN
	blocks *fakeBlocks
}

func newXHHarness(t *testing.T) *xhHarness {
	t.Helper()
	h := &xhHarness{harness: newHarness(t), cl: newFakeCluster(),
		vx: &fakeVXLAN{devices: map[string]vxlan.Device{}, tables: map[string]vxlan.Table{}},
		blocks: &fakeBlocks{held: map[netip.Prefix]bool{netip.MustParsePrefix("10.42.0.0/24"): true}, prefetched: make(chan netip.Prefix, 10),
			released: make(chan netip.Prefix, 10)}}
	h.d = New(Config{Store: h.st, Links: h.links, Firewall: h.fw, CrossHost: &CrossHostConfig{
		Cluster: h.cl, VXLAN: h.vx, Blocks: h.blocks,
		VTEP: netip.MustParseAddr("192.0.2.1"), VTEPInterface: "eth0", UnderlayMTU: 1500, Port: 4789,
	}})
	return h
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
	want := vxlan.Device{Name: "vxv-2a", Alias: vxlanAlias(netA), VNI: 42, Port: 4789, Local: netip.MustParseAddr("192.0.2.1"),
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

	// The watch programs the device with the other hosts' endpoints only.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.d.RunCrossHost(ctx)
	<-h.cl.watching
	view := cluster.NewView()
	view.Hosts["self"] = cluster.Host{ID: "self", VTEP: netip.MustParseAddr("192.0.2.1")}
	view.Hosts["h2"] = cluster.Host{ID: "h2", VTEP: netip.MustParseAddr("192.0.2.2")}
	view.Endpoints["self/"+epID(1)] = cluster.Endpoint{ID: epID(1), Host: "self", VNI: 42, MAC: ep.MAC}
	view.Endpoints["h2/e2"] = cluster.Endpoint{ID: "e2", Host: "h2", VNI: 42, MAC: "02:00:00:00:00:02",
		IPv4: netip.MustParseAddr("10.42.0.66")}
	view.Endpoints["h2/e3"] = cluster.Endpoint{ID: "e3", Host: "h2", VNI: 7, MAC: "02:00:00:00:00:03"}
	h.cl.watchFn(view)
	tbl := h.vx.tables["vxv-2a"]
	if len(tbl.FDB) != 1 || tbl.FDB[0] != (vxlan.FDB{MAC: "02:00:00:00:00:02", Dst: netip.MustParseAddr("192.0.2.2")}) ||
		len(tbl.Neigh) != 1 || tbl.Neigh[0].IP != netip.MustParseAddr("10.42.0.66") {
		t.Fatalf("programmed table %+v", tbl)
	}
	if h.vx.limits != 1 {
		t.Fatalf("neighbour limits checked for %d entries, want 1", h.vx.limits)
	}
	st, err := h.d.ClusterStatus()
	if err != nil || st == nil || !st.Etcd.Connected || st.VTEP != "192.0.2.1" || st.FDBEntries != 1 || st.NeighborEntries != 1 ||
		len(st.Peers) != 1 || st.Peers[0].Host != "h2" || fmt.Sprint(st.Peers[0].Networks) != "[42]" {
		t.Fatalf("cluster status %+v, %v", st, err)
	}
	// The host goes: its entries go.
	delete(view.Hosts, "h2")
	h.cl.watchFn(view)
	if tbl := h.vx.tables["vxv-2a"]; len(tbl.FDB)+len(tbl.Neigh) != 0 {
		t.Fatalf("entries of a departed host kept: %+v", tbl)
	}

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
	h.d = New(Config{Store: h.st, Links: h.links, Firewall: h.fw, CrossHost: &CrossHostConfig{
		Cluster: h.cl, VXLAN: h.vx, Blocks: h.blocks, VTEP: netip.MustParseAddr("192.0.2.1"), UnderlayMTU: 1500, Port: 4789,
	}})
	h.vx.tables["vxv-2a"] = vxlan.Table{FDB: []vxlan.FDB{{MAC: "02:00:00:00:00:09", Dst: netip.MustParseAddr("192.0.2.9")}}}
	h.links.Links["vxv-99"] = bridge.LinkInfo{Name: "vxv-99", Alias: vxlanAlias(netB), Kind: "vxlan"}
	if _, err := h.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if !h.cl.rejoined[42] || h.cl.published[epID(1)].VNI != 42 {
		t.Fatalf("not re-published: rejoined %v published %v", h.cl.rejoined, h.cl.published)
	}
	if len(h.vx.tables["vxv-2a"].FDB) != 1 {
		t.Fatal("entries flushed before the first etcd view: known peers would be cut off while etcd is down")
	}
	if _, ok := h.links.Links["vxv-99"]; ok {
		t.Fatal("orphan vxlan device kept")
	}
}
