package peers

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/vxlan"
)

func named(ep cluster.Endpoint, name, domain string) cluster.Endpoint {
	ep.Name, ep.Domain = name, domain
	return ep
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestNamesFollowRecords(t *testing.T) {
	tb := newTable(testCfg)
	tb.reset(cluster.NetworkState{VNI: 9,
		Members: []cluster.Member{member("h1", "192.0.2.11"), member("h2", "192.0.2.12")},
		Endpoints: []cluster.Endpoint{
			named(endpoint("h1", "e1", "76:78:0a:5a:00:05", "10.90.0.5", 3), "web", "xnet"),
			named(endpoint("h2", "e2", "76:78:0a:5a:00:06", "10.90.0.6", 4), "web", "xnet"), // a name two claim
			named(endpoint("h2", "e3", "76:78:0a:5a:00:07", "10.90.0.7", 5), "DB", ""),
			named(endpoint("h2", "e4", "76:78:0a:5a:00:08", "10.90.0.5", 6), "thief", "xnet"),   // lost the address
			endpoint("h1", "e5", "76:78:0a:5a:00:09", "10.90.0.9", 7),                           // no name yet
			named(endpoint("self", "e6", "76:78:0a:5a:00:0a", "10.90.0.10", 8), "mine", "xnet"), // docker answers it
		}})
	n := tb.names(9)
	for _, c := range []struct {
		q    string
		want []netip.Addr
	}{
		{"web", addrs("10.90.0.5", "10.90.0.6")},
		{"WEB.xnet.", addrs("10.90.0.5", "10.90.0.6")},
		{"db", addrs("10.90.0.7")},
		{"thief", nil},
		{"mine", nil},
		{"xnet", nil},
	} {
		if got := n.Lookup(c.q); !slices.Equal(got, c.want) {
			t.Errorf("Lookup(%q) = %v, want %v", c.q, got, c.want)
		}
	}
	if name, ok := n.Reverse(netip.MustParseAddr("10.90.0.6")); !ok || name != "web.xnet" {
		t.Errorf("Reverse(10.90.0.6) = %q %v, want web.xnet", name, ok)
	}
	// The host goes: its names go with it.
	tb.apply(cluster.Change{Kind: cluster.MemberGone, Host: "h1"})
	n = tb.names(9)
	if got := n.Lookup("web"); !slices.Equal(got, addrs("10.90.0.6")) {
		t.Errorf("after h1 left, web = %v, want only h2's", got)
	}
	// The loser of 10.90.0.5 holds it now, and answers for it.
	if got := n.Lookup("thief.xnet"); !slices.Equal(got, addrs("10.90.0.5")) {
		t.Errorf("after h1 left, thief.xnet = %v, want 10.90.0.5", got)
	}
	// A local endpoint takes an address: no remote name answers it.
	tb.setLocal(addrs("10.90.0.6"), nil)
	if got := tb.names(9).Lookup("web"); got != nil {
		t.Errorf("web with its address local = %v, want nothing", got)
	}
	if es := n.Entries(); len(es) != 3 || es[0].Name != "db" {
		t.Errorf("entries %+v", es)
	}
}

// TestNamesForNeverWaits: while the worker is stuck in a kernel write, the
// names of the last snapshot are still served at once, by source subnet.
func TestNamesForNeverWaits(t *testing.T) {
	k := newFakeKernel()
	src := newFakeSource()
	m := newTestManager(t, src)
	m.Attach(testNetwork(k))
	s := src.sink(t, 9)
	container := webServed(t, m, s)
	deadline := time.Now().Add(5 * time.Second)
	if m.NamesFor(netip.MustParseAddr("10.91.0.20")) != nil {
		t.Fatal("a source outside every network's subnet got a snapshot")
	}
	k.mu.Lock()
	k.block = make(chan struct{})
	k.mu.Unlock()
	s.Apply([]cluster.Change{{Kind: cluster.EndpointSet, Host: "h1", ID: "e2",
		Endpoint: named(endpoint("h1", "e2", "76:78:0a:5a:00:06", "10.90.0.6", 4), "db", "xnet")}})
	time.Sleep(20 * time.Millisecond) // the worker is now in the kernel
	start := time.Now()
	got := m.NamesFor(container).Lookup("web")
	if d := time.Since(start); d > 10*time.Millisecond || len(got) != 1 {
		t.Fatalf("lookup took %s and found %v while the worker was stuck", d, got)
	}
	close(k.block)
	for m.NamesFor(container).Lookup("db") == nil {
		if time.Now().After(deadline) {
			t.Fatal("the new name never reached the snapshot")
		}
		time.Sleep(2 * time.Millisecond)
	}
	m.Detach(9)
	if m.NamesFor(container) != nil {
		t.Fatal("a detached network still answers")
	}
	if st := m.Status(); len(st) != 0 {
		t.Fatalf("status after detach: %+v", st)
	}
}

// webServed gives network 9 one remote endpoint named web and waits for
// a container of the network to be answered its name; it returns that
// container's address.
func webServed(t *testing.T, m *Manager, s cluster.NetworkSink) netip.Addr {
	t.Helper()
	s.Reset(cluster.NetworkState{VNI: 9, Members: []cluster.Member{member("h1", "192.0.2.11")},
		Endpoints: []cluster.Endpoint{named(endpoint("h1", "e1", "76:78:0a:5a:00:05", "10.90.0.5", 3), "web", "xnet")}})
	container := netip.MustParseAddr("10.90.0.20")
	deadline := time.Now().Add(5 * time.Second)
	for m.NamesFor(container).Lookup("web") == nil {
		if time.Now().After(deadline) {
			t.Fatal("the name never reached the snapshot")
		}
		time.Sleep(2 * time.Millisecond)
	}
	return container
}

// TestNamesOnDemand: with peers programmed on demand, the names of every
// remote endpoint are served, not only of those the kernel asked for: a
// name is what makes a container talk to a peer (and miss) at all.
func TestNamesOnDemand(t *testing.T) {
	k := &missKernel{fakeKernel: newFakeKernel(), misses: make(chan vxlan.Miss, 1)}
	m := New(Config{Self: "self", SelfVTEP: testCfg.SelfVTEP, Source: newFakeSource(), OnDemand: true})
	t.Cleanup(m.Close)
	m.Attach(testNetwork(k))
	webServed(t, m, m.cfg.Source.(*fakeSource).sink(t, 9))
	if got := k.table(); len(got.FDB)+len(got.Neigh) != 0 {
		t.Fatalf("serving a name programmed the peer: %+v", got)
	}
}
