package driver

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/store"
)

// The deletes package orphans calls: each asks orphan about the record as
// it is under the lock, and deletes only what orphan says is one.
func TestDeleteEndpointIf(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	unjoined, joined := epID(21), epID(22)
	createEndpoint(t, h, unjoined, "10.10.0.21/24", "")
	createEndpoint(t, h, joined, "10.10.0.22/24", "")
	joinEndpoint(t, h, joined)
	notJoined := func(ep *store.Endpoint) (bool, error) { return !ep.Joined, nil }
	for id, want := range map[string]bool{unjoined: true, joined: false, epID(23): false} {
		got, err := h.d.DeleteEndpointIf(id, notJoined)
		if err != nil || (got != nil) != want || (got != nil && got.ID != id) {
			t.Errorf("DeleteEndpointIf(%s) = %+v, %v; want deleted %t", id[:12], got, err, want)
		}
	}
	h.links.Flush()
	if ep, _ := h.st.Endpoint(unjoined); ep != nil || h.links.Names()["vxh"+unjoined[:12]] {
		t.Errorf("unjoined endpoint left: record %v, veth %t", ep, h.links.Names()["vxh"+unjoined[:12]])
	}
	if ep, _ := h.st.Endpoint(joined); ep == nil || !h.links.Names()["vxh"+joined[:12]] {
		t.Error("joined endpoint was deleted")
	}
	if ids := h.d.EndpointsHolding(netip.MustParseAddr("10.10.0.21")); len(ids) != 0 {
		t.Errorf("the deleted endpoint still holds its address: %v", ids)
	}
}

// DeleteEndpointsIf goes on past a failing judgement, reports it, and
// deletes the rest.
func TestDeleteEndpointsIf(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	bad, good, kept := epID(71), epID(72), epID(73)
	for _, id := range []string{bad, good, kept} {
		createEndpoint(t, h, id, "", "")
	}
	errLookup := errors.New("netlink: no buffer space")
	got, err := h.d.DeleteEndpointsIf([]string{bad, good, kept, epID(74)}, func(ep *store.Endpoint) (bool, error) {
		if ep.ID == bad {
			return false, errLookup
		}
		return ep.ID == good, nil
	})
	if !errors.Is(err, errLookup) || len(got) != 1 || got[0].ID != good {
		t.Fatalf("DeleteEndpointsIf = %+v, %v; want only %s and the lookup error", got, err, good[:12])
	}
	for id, want := range map[string]bool{bad: true, good: false, kept: true} {
		if ep, _ := h.st.Endpoint(id); (ep != nil) != want {
			t.Errorf("endpoint %s record present = %t, want %t", id[:12], ep != nil, want)
		}
	}
}

// The judgement and the delete run under the lock docker's calls on the
// record take: the endpoint's own (with the driver's shared) for one
// endpoint, the driver's exclusive for a batch and for networks.
func TestOrphanDeletesHoldTheLocks(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	mustCreate(t, h, createReq(netB, "10.11.0.0/24", "10.11.0.1/24", nil))
	one, two := epID(81), epID(82)
	createEndpoint(t, h, one, "", "")
	createEndpoint(t, h, two, "", "")
	exclusive := func(what string) {
		if h.d.mu.TryRLock() {
			h.d.mu.RUnlock()
			t.Errorf("%s: the driver's lock is not held exclusively", what)
		}
	}
	if _, err := h.d.DeleteEndpointIf(one, func(*store.Endpoint) (bool, error) {
		if h.d.mu.TryLock() {
			h.d.mu.Unlock()
			t.Error("DeleteEndpointIf: the driver's lock is not held")
		}
		if h.d.eps.Len() != 1 {
			t.Error("DeleteEndpointIf: the endpoint's lock is not held")
		}
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.d.DeleteEndpointsIf([]string{two}, func(*store.Endpoint) (bool, error) {
		exclusive("DeleteEndpointsIf")
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.d.DeleteNetworksIf(func(*store.Network) bool { exclusive("DeleteNetworksIf"); return false }); err != nil {
		t.Fatal(err)
	}
}

// A network with endpoints is never an orphan, whatever orphan says.
func TestDeleteNetworksIf(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	mustCreate(t, h, createReq(netB, "10.11.0.0/24", "10.11.0.1/24", nil))
	createEndpoint(t, h, epID(41), "10.10.0.41/24", "")
	bridgeA := mustNet(t, h, netA).Bridge
	got, err := h.d.DeleteNetworksIf(func(*store.Network) bool { return true })
	if err != nil || len(got) != 1 || got[0].ID != netB {
		t.Fatalf("DeleteNetworksIf = %+v, %v; want only %s", got, err, netB[:12])
	}
	if n, _ := h.st.Network(netB); n != nil {
		t.Error("the endpoint-less network kept")
	}
	if n, _ := h.st.Network(netA); n == nil || !h.links.Names()[bridgeA] {
		t.Error("the network with an endpoint went")
	}
}

// EndpointsHolding follows the records, across a restart too (Reconcile
// fills it from them).
func TestEndpointsHolding(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	one, two := epID(31), epID(32)
	createEndpoint(t, h, one, "10.10.0.31/24", "")
	createEndpoint(t, h, two, "10.10.0.32/24", "")
	a := netip.MustParseAddr("10.10.0.31")
	if ids := h.d.EndpointsHolding(a); !slices.Equal(ids, []string{one}) {
		t.Fatalf("EndpointsHolding(%s) = %v, want %s", a, ids, one[:12])
	}
	h.d = New(Config{Store: h.st, Links: h.links, Firewall: h.fw})
	if ids := h.d.EndpointsHolding(a); len(ids) != 0 {
		t.Fatalf("a new driver knows holders before Reconcile: %v", ids)
	}
	if _, err := h.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if ids := h.d.EndpointsHolding(a); !slices.Equal(ids, []string{one}) {
		t.Errorf("after Reconcile EndpointsHolding(%s) = %v, want %s", a, ids, one[:12])
	}
	if err := h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: one}); err != nil {
		t.Fatal(err)
	}
	if ids := h.d.EndpointsHolding(a); len(ids) != 0 {
		t.Errorf("after DeleteEndpoint EndpointsHolding(%s) = %v", a, ids)
	}
}

func mustNet(t *testing.T, h *harness, id string) *store.Network {
	t.Helper()
	n, err := h.st.Network(id)
	if err != nil || n == nil {
		t.Fatalf("network %s: %v", id[:12], err)
	}
	return n
}

// A network docker created with its own IPAM on a subnet overlapping an
// endpoint-less stored network from the same space shows the stored one is
// an orphan (docker's IPAM refuses overlaps): it is deleted, the new one
// made.
// From vxbridge's IPAM spaces, or with endpoints, the overlap is refused.
func TestOrphanNetworkReplacedOnDockerIPAMOverlap(t *testing.T) {
	h := newHarness(t)
	req := func(id, space string) *network.CreateNetworkRequest {
		r := createReq(id, "10.20.0.0/24", "10.20.0.1/24", nil)
		r.IPv4Data[0].AddressSpace = space
		return r
	}
	mustCreate(t, h, req(netA, "LocalDefault"))
	orphanBridge := mustNet(t, h, netA).Bridge
	mustCreate(t, h, req(netB, "LocalDefault"))
	if n, _ := h.st.Network(netA); n != nil || h.links.Names()[orphanBridge] {
		t.Fatalf("orphan network kept: record %v, bridge %t", n != nil, h.links.Names()[orphanBridge])
	}
	// With an endpoint it is live: refused.
	createEndpointOn(t, h, netB, epID(51), "10.20.0.51/24")
	const netC = "cccccccccccc3333333333333333333333333333333333333333333333333333"
	if err := h.d.CreateNetwork(req(netC, "LocalDefault")); err == nil {
		t.Error("a network with an endpoint was replaced")
	}
	// netD, endpoint-less, from vxbridge's IPAM: an overlap with it from
	// the same space (vxbridge's own IPAM may hand one pool to two
	// networks) or from docker's (which does not know vxbridge's pools) is
	// never an orphan's sign.
	const netD = "dddddddddddd4444444444444444444444444444444444444444444444444444"
	const netE = "eeeeeeeeeeee5555555555555555555555555555555555555555555555555555"
	on2021 := func(id, space string) *network.CreateNetworkRequest {
		r := req(id, space)
		r.IPv4Data[0].Pool, r.IPv4Data[0].Gateway = "10.21.0.0/24", "10.21.0.1/24"
		return r
	}
	mustCreate(t, h, on2021(netD, "vxbridge-local"))
	for _, space := range []string{"vxbridge-local", "LocalDefault"} {
		if err := h.d.CreateNetwork(on2021(netE, space)); err == nil {
			t.Errorf("overlap from space %s with vxbridge's IPAM space was not refused", space)
		}
		if n, _ := h.st.Network(netD); n == nil {
			t.Fatalf("network of vxbridge's IPAM deleted as an orphan for an overlap from space %s", space)
		}
	}
}

func createEndpointOn(t *testing.T, h *harness, netID, id, addr string) {
	t.Helper()
	if _, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: id,
		Interface: &network.EndpointInterface{Address: addr}}); err != nil {
		t.Fatal(err)
	}
}

// joinEndpoint joins endpoint id of netA to a sandbox.
func joinEndpoint(t *testing.T, h *harness, id string) {
	t.Helper()
	if _, err := h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: id, SandboxKey: "/x"}); err != nil {
		t.Fatal(err)
	}
}
