package orphans

import (
	"net/netip"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/store"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

// state: one local network on 10.1.0.0/24 with a joined endpoint (.2) and
// an unjoined one (.3); its pool also holds .9, which nobody holds, the
// gateway .1 and an aux .200. A cross-host network's pool and a pool no
// vxbridge network uses both hold unheld endpoint addresses too. A network
// on a pool with nothing taken keeps its pool: only a pool no network is on
// is an orphan.
func state() State {
	local := store.Network{ID: "n1", IPv4: []store.Subnet{{Pool: pfx("10.1.0.0/24"), Gateway: pfx("10.1.0.1/24")}}}
	cross := store.Network{ID: "n2", VNI: 42, IPv4: []store.Subnet{{Pool: pfx("10.2.0.0/24")}}}
	bare := store.Network{ID: "n5", IPv4: []store.Subnet{{Pool: pfx("10.5.0.0/24")}}}
	taken := map[string]map[netip.Addr]store.AddressKind{
		"p1": {ip("10.1.0.1"): store.KindGateway, ip("10.1.0.2"): store.KindEndpoint, ip("10.1.0.3"): store.KindStatic,
			ip("10.1.0.9"): store.KindEndpoint, ip("10.1.0.200"): store.KindAux},
		"p2": {ip("10.2.0.9"): store.KindEndpoint},
		"p3": {ip("10.3.0.9"): store.KindEndpoint},
		"p4": {}, // stored, never used: a RequestPool whose reply a crash cut off
		"p5": {}, // n5's
	}
	return State{
		Networks: []store.Network{local, cross, bare},
		Endpoints: []store.Endpoint{
			{ID: "joined", NetworkID: "n1", IPv4: pfx("10.1.0.2/24"), Joined: true},
			{ID: "unjoined", NetworkID: "n1", IPv4: pfx("10.1.0.3/24")},
		},
		Pools: []store.Pool{{ID: "p1", Prefix: pfx("10.1.0.0/24")}, {ID: "p2", Prefix: pfx("10.2.0.0/24")},
			{ID: "p3", Prefix: pfx("10.3.0.0/24")}, {ID: "p4", Prefix: pfx("10.4.0.0/24")}, {ID: "p5", Prefix: pfx("10.5.0.0/24")}},
		Taken: func(id string) (map[netip.Addr]store.AddressKind, error) { return taken[id], nil },
	}
}

func TestCandidatesAreCollectedOnlyAfterTheGrace(t *testing.T) {
	var tr Tracker
	t0 := time.Unix(1_000_000, 0)
	for _, dt := range []time.Duration{0, time.Minute, DefaultGrace - time.Second} {
		got, err := tr.Pass(state(), t0.Add(dt), DefaultGrace)
		if err != nil || len(got.NeverJoined) != 0 || len(got.Addresses) != 0 || len(got.Pools) != 0 {
			t.Fatalf("at +%v: %+v %v, want nothing before the grace", dt, got, err)
		}
	}
	got, err := tr.Pass(state(), t0.Add(DefaultGrace), DefaultGrace)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.NeverJoined) != 1 || got.NeverJoined[0].ID != "unjoined" {
		t.Errorf("unjoined = %+v, want only the unjoined endpoint", got.NeverJoined)
	}
	// Only the local pool's unheld endpoint address: not the gateway, the
	// aux reservation, held addresses, nor other pools.
	if len(got.Addresses) != 1 || got.Addresses[0] != (Address{PoolID: "p1", Addr: ip("10.1.0.9")}) {
		t.Errorf("addresses = %+v, want only p1 10.1.0.9", got.Addresses)
	}
	// Only the empty pool no network uses (p3 has an address: some other
	// driver's network holds it; p5 is n5's).
	if len(got.Pools) != 1 || got.Pools[0] != "p4" {
		t.Errorf("pools = %v, want only p4", got.Pools)
	}
}

// A candidate that stops being one (docker's Join came, an endpoint took the
// address) is dropped: if it comes back, its wait starts again.
func TestCandidateThatRecoversStartsOver(t *testing.T) {
	var tr Tracker
	t0 := time.Unix(1_000_000, 0)
	tr.Pass(state(), t0, DefaultGrace)
	st := state()
	st.Endpoints[1].Joined = true
	st.Endpoints = append(st.Endpoints, store.Endpoint{ID: "late", NetworkID: "n1", IPv4: pfx("10.1.0.9/24"), Joined: true})
	tr.Pass(st, t0.Add(time.Minute), DefaultGrace)
	got, _ := tr.Pass(state(), t0.Add(DefaultGrace+time.Second), DefaultGrace)
	if len(got.NeverJoined) != 0 || len(got.Addresses) != 0 {
		t.Errorf("candidates that recovered in between were collected: %+v", got)
	}
	got, _ = tr.Pass(state(), t0.Add(2*DefaultGrace+time.Second), DefaultGrace)
	if len(got.NeverJoined) != 1 || len(got.Addresses) != 1 {
		t.Errorf("after a full grace as candidates again: %+v, want both", got)
	}
}

// An endpoint's stored creation time counts: a plugin restarting more often
// than the grace (a new Tracker each time) still collects it.
func TestStoredCreationTimeSurvivesRestarts(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	st := state()
	st.Endpoints[1].Created = t0
	var fresh Tracker
	got, err := fresh.Pass(st, t0.Add(DefaultGrace), DefaultGrace)
	if err != nil || len(got.NeverJoined) != 1 || got.NeverJoined[0].ID != "unjoined" {
		t.Fatalf("first pass of a new tracker, endpoint created a grace ago: %+v %v", got.NeverJoined, err)
	}
	// Created just now: not before the grace, whatever the tracker.
	st.Endpoints[1].Created = t0.Add(DefaultGrace)
	var again Tracker
	if got, _ := again.Pass(st, t0.Add(DefaultGrace), DefaultGrace); len(got.NeverJoined) != 0 {
		t.Errorf("a new endpoint was collected at once: %+v", got.NeverJoined)
	}
}
