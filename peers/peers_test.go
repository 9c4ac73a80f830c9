package peers

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/vxlan"
)

// fakeKernel is one device's table; block makes Apply wait until closed.
type fakeKernel struct {
	mu    sync.Mutex
	m     *model
	fail  error
	block chan struct{}
	calls int
}

func newFakeKernel() *fakeKernel { return &fakeKernel{m: newModel()} }

func (k *fakeKernel) Apply(dev string, c vxlan.Changes) error {
	k.mu.Lock()
	block := k.block
	k.mu.Unlock()
	if block != nil {
		<-block
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls++
	if k.fail != nil {
		return k.fail
	}
	for _, e := range c.DelFDB {
		delete(k.m.fdb, e.MAC)
	}
	for _, e := range c.DelNeigh {
		delete(k.m.neigh, e.IP)
	}
	for _, e := range c.SetFDB {
		k.m.fdb[e.MAC] = e.Dst
	}
	for _, e := range c.SetNeigh {
		k.m.neigh[e.IP] = e.MAC
	}
	return nil
}

func (k *fakeKernel) Entries(dev string) (vxlan.Table, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fail != nil {
		return vxlan.Table{}, k.fail
	}
	return k.m.table(), nil
}

func (k *fakeKernel) table() vxlan.Table {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.m.table()
}

// fakeSource hands each followed network's sink to the test.
type fakeSource struct {
	mu    sync.Mutex
	sinks map[uint32]cluster.NetworkSink
	ch    chan uint32
}

func newFakeSource() *fakeSource {
	return &fakeSource{sinks: map[uint32]cluster.NetworkSink{}, ch: make(chan uint32, 16)}
}

func (s *fakeSource) FollowNetwork(ctx context.Context, vni uint32, sink cluster.NetworkSink) {
	s.mu.Lock()
	s.sinks[vni] = sink
	s.mu.Unlock()
	s.ch <- vni
	<-ctx.Done()
}

func (s *fakeSource) sink(t *testing.T, vni uint32) cluster.NetworkSink {
	t.Helper()
	select {
	case got := <-s.ch:
		if got != vni {
			t.Fatalf("followed network %d, want %d", got, vni)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("network %d never followed", vni)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sinks[vni]
}

func member(host, vtep string) cluster.Member {
	return cluster.Member{Host: host, VTEP: netip.MustParseAddr(vtep), Port: 4789}
}

func endpoint(host, id, mac, ip string, rev int64) cluster.Endpoint {
	return cluster.Endpoint{ID: id, Host: host, VNI: 9, MAC: mac, IPv4: netip.MustParseAddr(ip), Rev: rev}
}

func testNetwork(k Kernel) Network {
	return Network{ID: "n1", VNI: 9, Device: "vxv-9", Subnets: testCfg.Subnets, Gateways: testCfg.Gateways, Kernel: k}
}

func newTestManager(t *testing.T, src Source) *Manager {
	m := New(Config{Self: "self", SelfVTEP: testCfg.SelfVTEP, Source: src})
	t.Cleanup(m.Close)
	return m
}

// until waits for the kernel's table to be want.
func until(t *testing.T, k *fakeKernel, want vxlan.Table) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !equalTables(k.table(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("kernel\n%+v\nwant\n%+v", k.table(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func tableOf(fdb map[string]string, neigh map[string]string) vxlan.Table {
	m := newModel()
	for mac, dst := range fdb {
		m.fdb[mac] = netip.MustParseAddr(dst)
	}
	for ip, mac := range neigh {
		m.neigh[netip.MustParseAddr(ip)] = mac
	}
	return m.table()
}

func TestFollowerProgramsDeltas(t *testing.T) {
	k := newFakeKernel()
	stale := tableOf(map[string]string{"76:78:0a:5a:00:63": "192.0.2.99"}, map[string]string{"10.90.0.99": "76:78:0a:5a:00:63"})
	k.Apply("vxv-9", vxlan.Plan(stale, vxlan.Table{})) // left by a past run
	src := newFakeSource()
	m := newTestManager(t, src)
	m.Attach(testNetwork(k))
	s := src.sink(t, 9)
	m.Resync()
	time.Sleep(50 * time.Millisecond)
	until(t, k, stale) // before the first listing nothing is deleted

	s.Reset(cluster.NetworkState{VNI: 9, Members: []cluster.Member{member("h1", "192.0.2.11")},
		Endpoints: []cluster.Endpoint{endpoint("h1", "e1", "76:78:0a:5a:00:05", "10.90.0.5", 3)}})
	until(t, k, tableOf(map[string]string{"76:78:0a:5a:00:05": "192.0.2.11"}, map[string]string{"10.90.0.5": "76:78:0a:5a:00:05"}))

	// A forged record: another host, a lower MAC, the same address; and one
	// for the gateway. Neither gets an address, so neither gets its MAC
	// either: the tables stay as they were.
	s.Apply([]cluster.Change{
		{Kind: cluster.MemberSet, Host: "h2", Member: member("h2", "192.0.2.12")},
		{Kind: cluster.EndpointSet, Host: "h2", ID: "x", Endpoint: endpoint("h2", "x", "00:00:00:00:00:01", "10.90.0.5", 7)},
		{Kind: cluster.EndpointSet, Host: "h2", ID: "gw", Endpoint: endpoint("h2", "gw", "76:78:0a:5a:00:01", "10.90.0.1", 8)},
	})
	until(t, k, tableOf(map[string]string{"76:78:0a:5a:00:05": "192.0.2.11"}, map[string]string{"10.90.0.5": "76:78:0a:5a:00:05"}))
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := m.Status()
		if len(st) == 1 && len(st[0].Conflicts) == 1 && st[0].Conflicts[0].Endpoint == "h2/x" && st[0].Conflicts[0].Holder == "h1/e1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %+v: want the forged record listed as a conflict", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if m.Conflicts() != 1 {
		t.Fatalf("conflicts counted %d, want 1", m.Conflicts())
	}
	// The real claimant goes: the other takes the address (the gateway's
	// claimant still holds none).
	s.Apply([]cluster.Change{{Kind: cluster.EndpointGone, Host: "h1", ID: "e1"}})
	until(t, k, tableOf(map[string]string{"00:00:00:00:00:01": "192.0.2.12"},
		map[string]string{"10.90.0.5": "00:00:00:00:00:01"}))
	// This host's own endpoint takes it: no remote may answer for it, and
	// the record holding nothing any more loses its MAC too.
	m.SetLocal(9, []netip.Addr{netip.MustParseAddr("10.90.0.5")}, nil)
	until(t, k, tableOf(nil, nil))
}

// TestFollowerRepairsAfterKernelFailure: a failed write makes the follower
// compare the whole device again, and the kernel ends as the records say.
func TestFollowerRepairsAfterKernelFailure(t *testing.T) {
	k := newFakeKernel()
	src := newFakeSource()
	m := newTestManager(t, src)
	m.Attach(testNetwork(k))
	s := src.sink(t, 9)
	s.Reset(cluster.NetworkState{VNI: 9, Members: []cluster.Member{member("h1", "192.0.2.11")}})
	time.Sleep(20 * time.Millisecond)
	k.mu.Lock()
	k.fail = errors.New("no such device")
	k.mu.Unlock()
	s.Apply([]cluster.Change{{Kind: cluster.EndpointSet, Host: "h1", ID: "e1", Endpoint: endpoint("h1", "e1", "76:78:0a:5a:00:05", "10.90.0.5", 3)}})
	deadline := time.Now().Add(5 * time.Second)
	for st := m.Status(); len(st) == 0 || st[0].LastError == ""; st = m.Status() {
		if time.Now().After(deadline) {
			t.Fatal("the failed write never showed in status")
		}
		time.Sleep(5 * time.Millisecond)
	}
	k.mu.Lock()
	k.fail = nil
	k.mu.Unlock()
	until(t, k, tableOf(map[string]string{"76:78:0a:5a:00:05": "192.0.2.11"}, map[string]string{"10.90.0.5": "76:78:0a:5a:00:05"}))
}

// TestCallsNeverWaitForProgramming: while the kernel is stuck in a write,
// everything the driver calls returns at once.
func TestCallsNeverWaitForProgramming(t *testing.T) {
	k := newFakeKernel()
	src := newFakeSource()
	m := newTestManager(t, src)
	m.Attach(testNetwork(k))
	s := src.sink(t, 9)
	k.mu.Lock()
	k.block = make(chan struct{})
	k.mu.Unlock()
	s.Reset(cluster.NetworkState{VNI: 9, Members: []cluster.Member{member("h1", "192.0.2.11")},
		Endpoints: []cluster.Endpoint{endpoint("h1", "e1", "76:78:0a:5a:00:05", "10.90.0.5", 3)}})
	time.Sleep(20 * time.Millisecond) // the worker is now in the kernel
	start := time.Now()
	m.SetLocal(9, []netip.Addr{netip.MustParseAddr("10.90.0.7")}, nil)
	m.Attach(testNetwork(k))
	m.Resync()
	m.Status()
	s.Apply([]cluster.Change{{Kind: cluster.EndpointGone, Host: "h1", ID: "e1"}})
	m.Detach(9)
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Fatalf("calls took %s while the kernel was stuck", d)
	}
	close(k.block)
}

// TestReattachWaitsForDetached: a network detached and attached again
// (deleted and made again) gets a new follower that starts only once the
// old one stopped: two workers never write the same device.
func TestReattachWaitsForDetached(t *testing.T) {
	k := newFakeKernel()
	src := newFakeSource()
	m := newTestManager(t, src)
	m.Attach(testNetwork(k))
	s := src.sink(t, 9)
	k.mu.Lock()
	k.block = make(chan struct{})
	k.mu.Unlock()
	s.Reset(cluster.NetworkState{VNI: 9, Members: []cluster.Member{member("h1", "192.0.2.11")},
		Endpoints: []cluster.Endpoint{endpoint("h1", "e1", "76:78:0a:5a:00:05", "10.90.0.5", 3)}})
	time.Sleep(20 * time.Millisecond)
	m.Detach(9)
	n := testNetwork(k)
	n.ID = "n2"
	m.Attach(n)
	select {
	case <-src.ch:
		t.Fatal("the new follower started while the old one was still writing")
	case <-time.After(100 * time.Millisecond):
	}
	close(k.block)
	src.sink(t, 9)
}

// missKernel is a fakeKernel that reports misses the test sends.
type missKernel struct {
	*fakeKernel
	misses chan vxlan.Miss
}

func (k *missKernel) WatchMisses(ctx context.Context, dev string, fn func(vxlan.Miss)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-k.misses:
			fn(m)
		}
	}
}

// TestOnDemand: nothing is programmed until a miss asks for it; a miss
// programs the one peer, as transient entries; a changed record updates
// only what the kernel holds, a gone one removes it.
func TestOnDemand(t *testing.T) {
	k := &missKernel{fakeKernel: newFakeKernel(), misses: make(chan vxlan.Miss, 4)}
	src := newFakeSource()
	m := New(Config{Self: "self", SelfVTEP: testCfg.SelfVTEP, Source: src, OnDemand: true})
	t.Cleanup(m.Close)
	m.Attach(testNetwork(k))
	s := src.sink(t, 9)
	s.Reset(cluster.NetworkState{VNI: 9, Members: []cluster.Member{member("h1", "192.0.2.11"), member("h2", "192.0.2.12")},
		Endpoints: []cluster.Endpoint{endpoint("h1", "e1", "76:78:0a:5a:00:05", "10.90.0.5", 3),
			endpoint("h2", "e2", "76:78:0a:5a:00:06", "10.90.0.6", 4)}})
	time.Sleep(50 * time.Millisecond)
	if got := k.table(); len(got.FDB)+len(got.Neigh) != 0 {
		t.Fatalf("programmed before any miss: %+v", got)
	}
	k.misses <- vxlan.Miss{IP: netip.MustParseAddr("10.90.0.5")}
	k.misses <- vxlan.Miss{IP: netip.MustParseAddr("10.90.0.77")} // nobody's: nothing
	until(t, k.fakeKernel, tableOf(map[string]string{"76:78:0a:5a:00:05": "192.0.2.11"}, map[string]string{"10.90.0.5": "76:78:0a:5a:00:05"}))
	// h1 moves its VTEP: the entry held is rewritten; h2's record changes:
	// nothing, it was never asked for.
	s.Apply([]cluster.Change{{Kind: cluster.MemberSet, Host: "h1", Member: member("h1", "192.0.2.21")},
		{Kind: cluster.EndpointSet, Host: "h2", ID: "e2", Endpoint: endpoint("h2", "e2", "76:78:0a:5a:00:06", "10.90.0.8", 4)}})
	until(t, k.fakeKernel, tableOf(map[string]string{"76:78:0a:5a:00:05": "192.0.2.21"}, map[string]string{"10.90.0.5": "76:78:0a:5a:00:05"}))
	s.Apply([]cluster.Change{{Kind: cluster.EndpointGone, Host: "h1", ID: "e1"}})
	until(t, k.fakeKernel, tableOf(nil, nil))
	if st := m.Status(); len(st) != 1 || st[0].Misses != 1 {
		t.Fatalf("status %+v, want 1 miss answered", st)
	}
}
