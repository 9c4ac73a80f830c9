package driver

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/ownership/mark"
	"github.com/vxbridge/vxbridge/peers"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/store"
)

func TestStatusRows(t *testing.T) {
	nets := []store.Network{
		{ID: "n2", Bridge: "br2", MTU: 1400, VNI: 42, IPv4: []store.Subnet{{Pool: netip.MustParsePrefix("10.2.0.0/24")}}},
		{ID: "n1", Bridge: "br1", ICC: true, Internal: true},
	}
	eps := []store.Endpoint{
		{ID: "e1", NetworkID: "n2", HostVeth: "vh1", IPv4: netip.MustParsePrefix("10.2.0.2/24"), Joined: true},
		{ID: "e2", NetworkID: "n2", HostVeth: "vh2"},
		{ID: "e3", NetworkID: "n2", HostVeth: "vh3"},
		{ID: "e4", NetworkID: "gone", HostVeth: "vh4"},
	}
	owned := []bridge.LinkInfo{
		{Name: "br2", Alias: mark.Alias("", mark.Net, "n2"), Kind: "bridge", MTU: 1500},
		{Name: "vh1", Alias: mark.Alias("", mark.Endpoint, "e1"), Kind: "veth", Master: "br2"},
		{Name: "vh2", Alias: mark.Alias("", mark.Endpoint, "e2"), Kind: "veth", Master: ""},
		{Name: "vh4", Alias: mark.Alias("", mark.Endpoint, "e4"), Kind: "veth"},
	}
	gotNets, gotEps := statusRows(nets, eps, owned)
	if len(gotNets) != 2 || gotNets[0].ID != "n1" || gotNets[1].ID != "n2" {
		t.Fatalf("networks not sorted by id: %+v", gotNets)
	}
	n1, n2 := gotNets[0], gotNets[1]
	if n1.Health.OK || !strings.Contains(n1.Health.Problem, "br1 is missing") || !n1.Internal || !n1.ICC {
		t.Errorf("n1 = %+v", n1)
	}
	if n2.Health.OK || !strings.Contains(n2.Health.Problem, "MTU is 1500, want 1400") || n2.Endpoints != 3 ||
		len(n2.Subnets) != 1 || n2.Subnets[0] != "10.2.0.0/24" || n2.VNI != 42 {
		t.Errorf("n2 = %+v", n2)
	}
	want := map[string]string{"e1": "", "e2": `on "", want bridge br2`, "e3": "vh3 is missing", "e4": "not in the state file"}
	for _, ep := range gotEps {
		w := want[ep.ID]
		if (w == "") != ep.Health.OK || !strings.Contains(ep.Health.Problem, w) {
			t.Errorf("%s health = %+v, want problem %q", ep.ID, ep.Health, w)
		}
	}
	if gotEps[0].IPv4 != "10.2.0.2/24" || gotEps[0].IPv6 != "" || !gotEps[0].Joined {
		t.Errorf("e1 = %+v", gotEps[0])
	}
}

func TestPeerRows(t *testing.T) {
	h2 := peers.Peer{Host: "h2", VTEP: netip.MustParseAddr("192.0.2.2"), Usable: true}
	h3 := peers.Peer{Host: "h3", VTEP: netip.MustParseAddr("127.0.0.1")} // refused VTEP
	nets := []peers.Status{
		{VNI: 7, FDB: 1, Neigh: 0, Peers: []peers.Peer{h2}},
		{VNI: 42, FDB: 1, Neigh: 1, Peers: []peers.Peer{h3, h2},
			Conflicts: []peers.Conflict{{Endpoint: "h3/e5", What: "address", Value: "10.42.0.2", Holder: "h2/e2"}}},
	}
	rows, fdb, neigh, conflicts := peerRows(nets)
	if fdb != 2 || neigh != 1 {
		t.Errorf("%d FDB and %d neighbour entries, want 2 and 1", fdb, neigh)
	}
	if len(rows) != 2 || rows[0].Host != "h2" || rows[1].Host != "h3" {
		t.Fatalf("peers %+v, want h2 and h3 in that order", rows)
	}
	if r := rows[0]; !r.Health.OK || r.VTEP != "192.0.2.2" || !slices.Equal(r.Networks, []string{"7", "42"}) {
		t.Errorf("h2 = %+v", r)
	}
	if r := rows[1]; r.Health.OK || !strings.Contains(r.Health.Problem, "127.0.0.1") {
		t.Errorf("h3 (loopback VTEP) = %+v", r)
	}
	if len(conflicts) != 1 || conflicts[0] != (status.Conflict{Network: "42", Endpoint: "h3/e5", What: "address", Value: "10.42.0.2", HeldBy: "h2/e2"}) {
		t.Errorf("conflicts %+v", conflicts)
	}
}
