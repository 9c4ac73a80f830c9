package driver

import (
	"net/netip"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/store"
)

// A joined endpoint whose container end is back in the plugin's namespace
// (docker removed the container while the plugin was down) is deleted with
// its veth; a joined one whose end is in its sandbox, and an unjoined one,
// are kept.
func TestCollectForgotten(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	gone, kept, fresh := epID(1), epID(2), epID(3)
	createEndpoint(t, h, gone, "10.10.0.2/24", "")
	createEndpoint(t, h, kept, "10.10.0.3/24", "")
	createEndpoint(t, h, fresh, "10.10.0.4/24", "")
	for _, id := range []string{gone, kept} {
		if _, err := h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: id, SandboxKey: "/var/run/docker/netns/" + id[:12]}); err != nil {
			t.Fatal(err)
		}
	}
	// Docker moved gone's container end back under its original name; the
	// unjoined endpoint's end is here too, as before any Join.
	for _, id := range []string{gone, fresh} {
		h.links.Links["vxc"+id[:12]] = bridge.LinkInfo{Name: "vxc" + id[:12], Kind: "veth"}
	}

	cands, err := h.d.ForgottenCandidates()
	if err != nil || len(cands) != 1 || cands[0] != gone {
		t.Fatalf("ForgottenCandidates = %v, %v; want only %s", cands, err, gone[:12])
	}
	got, err := h.d.CollectForgotten(cands)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != gone || got[0].IPv4.String() != "10.10.0.2/24" {
		t.Fatalf("CollectForgotten = %+v, want only %s with its address", got, gone[:12])
	}
	h.links.Flush()
	for id, want := range map[string]bool{gone: false, kept: true, fresh: true} {
		ep, err := h.st.Endpoint(id)
		if err != nil {
			t.Fatal(err)
		}
		if (ep != nil) != want {
			t.Errorf("endpoint %s record present = %v, want %v", id[:12], ep != nil, want)
		}
		if h.links.Names()["vxh"+id[:12]] != want {
			t.Errorf("endpoint %s host veth present = %v, want %v", id[:12], !want, want)
		}
	}
	// Idempotent: a second run finds nothing.
	if got, err := h.d.CollectForgotten(cands); err != nil || len(got) != 0 {
		t.Errorf("second CollectForgotten = %+v, %v", got, err)
	}
}

// A candidate whose container end docker moves into its sandbox before the
// second look (a crash right after the Join reply) is kept, and so is one
// docker deleted itself meanwhile.
func TestCollectForgottenLooksTwice(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	moved, deleted := epID(61), epID(62)
	for _, id := range []string{moved, deleted} {
		createEndpoint(t, h, id, "", "")
		joinEndpoint(t, h, id)
		h.links.Links["vxc"+id[:12]] = bridge.LinkInfo{Name: "vxc" + id[:12], Kind: "veth"}
	}
	cands, err := h.d.ForgottenCandidates()
	if err != nil || len(cands) != 2 {
		t.Fatalf("candidates %v, %v; want both", cands, err)
	}
	delete(h.links.Links, "vxc"+moved[:12]) // docker moved it into the sandbox
	if err := h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: deleted}); err != nil {
		t.Fatal(err)
	}
	got, err := h.d.CollectForgotten(cands)
	if err != nil || len(got) != 0 {
		t.Fatalf("CollectForgotten = %+v, %v; want nothing", got, err)
	}
	if ep, _ := h.st.Endpoint(moved); ep == nil {
		t.Error("an endpoint docker moved into its sandbox was collected")
	}
}

func TestDeleteUnjoined(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	unjoined, joined := epID(21), epID(22)
	createEndpoint(t, h, unjoined, "10.10.0.21/24", "")
	createEndpoint(t, h, joined, "10.10.0.22/24", "")
	joinEndpoint(t, h, joined)
	for id, want := range map[string]bool{unjoined: true, joined: false, epID(23): false} {
		got, err := h.d.DeleteUnjoined(id)
		if err != nil || got != want {
			t.Errorf("DeleteUnjoined(%s) = %t, %v; want %t", id[:12], got, err, want)
		}
	}
	h.links.Flush()
	if ep, _ := h.st.Endpoint(unjoined); ep != nil || h.links.Names()["vxh"+unjoined[:12]] {
		t.Errorf("unjoined endpoint left: record %v, veth %t", ep, h.links.Names()["vxh"+unjoined[:12]])
	}
	if ep, _ := h.st.Endpoint(joined); ep == nil || !h.links.Names()["vxh"+joined[:12]] {
		t.Error("joined endpoint was deleted")
	}
}

// Docker releasing an address gives up the unjoined endpoint that still
// claims it (a CreateEndpoint whose reply a crash cut off); a joined one, or
// one on another pool, stays.
func TestDropUnjoined(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	ghost, joined := epID(31), epID(32)
	createEndpoint(t, h, ghost, "10.10.0.31/24", "")
	createEndpoint(t, h, joined, "10.10.0.32/24", "")
	joinEndpoint(t, h, joined)
	pool := netip.MustParsePrefix("10.10.0.0/24")
	h.d.DropUnjoined(netip.MustParsePrefix("10.99.0.0/24"), netip.MustParseAddr("10.10.0.31")) // another pool
	h.d.DropUnjoined(pool, netip.MustParseAddr("10.10.0.32"))
	for _, id := range []string{ghost, joined} {
		if ep, _ := h.st.Endpoint(id); ep == nil {
			t.Fatalf("endpoint %s dropped too early", id[:12])
		}
	}
	// After a restart the driver finds the claim from the records.
	h.d = New(Config{Store: h.st, Links: h.links, Firewall: h.fw})
	if _, err := h.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	h.d.DropUnjoined(pool, netip.MustParseAddr("10.10.0.31"))
	if ep, _ := h.st.Endpoint(ghost); ep != nil {
		t.Error("unjoined endpoint kept after docker released its address")
	}
	if ep, _ := h.st.Endpoint(joined); ep == nil {
		t.Error("joined endpoint dropped")
	}
}

// Docker releasing a network's pool is done with the network: one it never
// deleted (its create's reply cut off by a crash) goes, unless it has
// endpoints or came from another address space.
func TestDropNetworkOnPool(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil)) // address space "x"
	mustCreate(t, h, createReq(netB, "10.11.0.0/24", "10.11.0.1/24", nil))
	createEndpoint(t, h, epID(41), "10.10.0.41/24", "")
	h.d.DropNetworkOnPool("x", netip.MustParsePrefix("10.10.0.0/24")) // has an endpoint
	h.d.DropNetworkOnPool("y", netip.MustParsePrefix("10.11.0.0/24")) // another space
	h.d.DropNetworkOnPool("x", netip.MustParsePrefix("10.11.0.0/25")) // another pool
	for _, id := range []string{netA, netB} {
		if n, _ := h.st.Network(id); n == nil {
			t.Fatalf("network %s dropped", id[:12])
		}
	}
	h.d.DropNetworkOnPool("x", netip.MustParsePrefix("10.11.0.0/24"))
	if n, _ := h.st.Network(netB); n != nil {
		t.Error("network on the released pool kept")
	}
	if h.links.Names()[mustNet(t, h, netA).Bridge] != true {
		t.Error("the other network's bridge went")
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
// a ghost (docker's IPAM refuses overlaps): it is deleted, the new one made.
// From vxbridge's IPAM spaces, or with endpoints, the overlap is refused.
func TestGhostNetworkReplacedOnDockerIPAMOverlap(t *testing.T) {
	h := newHarness(t)
	req := func(id, space string) *network.CreateNetworkRequest {
		r := createReq(id, "10.20.0.0/24", "10.20.0.1/24", nil)
		r.IPv4Data[0].AddressSpace = space
		return r
	}
	mustCreate(t, h, req(netA, "LocalDefault"))
	ghostBridge := mustNet(t, h, netA).Bridge
	mustCreate(t, h, req(netB, "LocalDefault"))
	if n, _ := h.st.Network(netA); n != nil || h.links.Names()[ghostBridge] {
		t.Fatalf("ghost network kept: record %v, bridge %t", n != nil, h.links.Names()[ghostBridge])
	}
	// With an endpoint it is live: refused.
	createEndpointOn(t, h, netB, epID(51), "10.20.0.51/24")
	const netC = "cccccccccccc3333333333333333333333333333333333333333333333333333"
	if err := h.d.CreateNetwork(req(netC, "LocalDefault")); err == nil {
		t.Error("a network with an endpoint was replaced")
	}
	// vxbridge's own IPAM may hand one pool to two networks: never a ghost sign.
	const netD = "dddddddddddd4444444444444444444444444444444444444444444444444444"
	const netE = "eeeeeeeeeeee5555555555555555555555555555555555555555555555555555"
	r := req(netD, "vxbridge-local")
	r.IPv4Data[0].Pool, r.IPv4Data[0].Gateway = "10.21.0.0/24", "10.21.0.1/24"
	mustCreate(t, h, r)
	r = req(netE, "vxbridge-local")
	r.IPv4Data[0].Pool, r.IPv4Data[0].Gateway = "10.21.0.0/24", "10.21.0.1/24"
	if err := h.d.CreateNetwork(r); err == nil {
		t.Error("overlap in vxbridge's IPAM space was not refused")
	}
	if n, _ := h.st.Network(netD); n == nil {
		t.Error("network of vxbridge's IPAM deleted as a ghost")
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
