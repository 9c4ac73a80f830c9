package peers

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/cluster"
)

// waitStatus polls the manager's status until ok accepts it.
func waitStatus(t *testing.T, m *Manager, what string, ok func([]Status) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok(m.Status()) {
		if time.Now().After(deadline) {
			t.Fatalf("status %+v: want %s", m.Status(), what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestForgedRecordsListed: records package cluster says are forged are
// listed with the refused claims and counted once each, for as long as
// they are there.
func TestForgedRecordsListed(t *testing.T) {
	k := newFakeKernel()
	src := newFakeSource()
	m := newTestManager(t, src)
	m.Attach(testNetwork(k))
	s := src.sink(t, 9)
	s.Reset(cluster.NetworkState{VNI: 9, Members: []cluster.Member{member("h1", "192.0.2.11")},
		Forged: map[string]string{"m/hz": "host hz has no such record of its own"}})
	want := Conflict{Endpoint: "hz", What: "record", Value: "forged: host hz has no such record of its own", Holder: "hz (its own copy)"}
	waitStatus(t, m, "the forged member listed", func(st []Status) bool {
		return len(st) == 1 && slices.Equal(st[0].Conflicts, []Conflict{want})
	})
	// The same again (a relisting), then another one: counted once each.
	s.Apply([]cluster.Change{
		{Kind: cluster.MemberGone, Host: "hz", Forged: "host hz has no such record of its own"},
		{Kind: cluster.EndpointSet, Host: "h1", ID: "e1", Endpoint: endpoint("h1", "e1", "76:78:0a:5a:00:05", "10.90.0.5", 3),
			Forged: "differs from host h1's own copy"},
	})
	waitStatus(t, m, "both forged records listed", func(st []Status) bool { return len(st) == 1 && len(st[0].Conflicts) == 2 })
	if got := m.Conflicts(); got != 2 {
		t.Fatalf("counted %d, want 2", got)
	}
	// The host writes its record back: no longer listed; the listing without
	// the forged member drops it.
	s.Apply([]cluster.Change{{Kind: cluster.EndpointSet, Host: "h1", ID: "e1", Endpoint: endpoint("h1", "e1", "76:78:0a:5a:00:05", "10.90.0.5", 3)}})
	s.Reset(cluster.NetworkState{VNI: 9, Members: []cluster.Member{member("h1", "192.0.2.11")}})
	waitStatus(t, m, "no forged record", func(st []Status) bool { return len(st) == 1 && len(st[0].Conflicts) == 0 })
}

// vtepLog collects what OnVTEPs reports.
type vtepLog struct {
	mu  sync.Mutex
	got []string
}

func (l *vtepLog) note(v []netip.Addr, following bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	report := fmt.Sprint(v)
	if !following {
		report += " following none"
	}
	l.got = append(l.got, report)
}

func (l *vtepLog) reports() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

func (l *vtepLog) waitLast(t *testing.T, want string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := l.reports()
		if len(got) == n && got[n-1] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("VTEP reports %q, want %d ending with %s", got, n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestVTEPReports: the member VTEPs of every followed network are reported
// once all of them are listed, and again on every change of the union
// (member records that are not usable, this host's own, and duplicates
// left out); a network detached takes its peers out, and the last one
// detached says no network is followed.
func TestVTEPReports(t *testing.T) {
	src := newFakeSource()
	var l vtepLog
	m := New(Config{Self: "self", SelfVTEP: testCfg.SelfVTEP, Source: src, OnVTEPs: l.note})
	t.Cleanup(m.Close)
	n9, n10 := testNetwork(newFakeKernel()), testNetwork(newFakeKernel())
	n10.ID, n10.VNI = "n2", 10
	m.Attach(n9)
	s9 := src.sink(t, 9)
	m.Attach(n10)
	s10 := src.sink(t, 10)
	s9.Reset(cluster.NetworkState{VNI: 9, Members: []cluster.Member{member("h1", "192.0.2.11"), member("self", "192.0.2.1"),
		member("hx", "127.0.0.1")}})
	time.Sleep(50 * time.Millisecond)
	if got := l.reports(); len(got) != 0 {
		t.Fatalf("reported %q before network 10 was listed", got)
	}
	s10.Reset(cluster.NetworkState{VNI: 10, Members: []cluster.Member{member("h1", "192.0.2.11"), member("h2", "192.0.2.12")}})
	l.waitLast(t, "[192.0.2.11 192.0.2.12]", 1)
	s10.Apply([]cluster.Change{{Kind: cluster.MemberSet, Host: "h3", Member: member("h3", "192.0.2.13")}})
	l.waitLast(t, "[192.0.2.11 192.0.2.12 192.0.2.13]", 2)
	s9.Apply([]cluster.Change{{Kind: cluster.MemberGone, Host: "h1"}}) // still a member of 10
	time.Sleep(50 * time.Millisecond)
	m.Detach(10)
	l.waitLast(t, "[]", 3) // network 9 has no usable peer left, but is followed
	m.Detach(9)
	l.waitLast(t, "[] following none", 4)
}
