package driver

import (
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
)

// A request naming the wrong network does not leave, unpublish, join or
// delete another network's endpoint (found by plugin/hostile_test.go: a
// DeleteEndpoint with a foreign network id deleted the endpoint).
func TestEndpointOnOtherNetworkIsRefused(t *testing.T) {
	h := newHarness(t)
	const netB = "bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222"
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	mustCreate(t, h, createReq(netB, "10.11.0.0/24", "10.11.0.1/24", nil))
	id := epID(1)
	createEndpoint(t, h, id, "10.10.0.2/24", "")
	if _, err := h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: id, SandboxKey: "/var/run/docker/netns/x"}); err != nil {
		t.Fatal(err)
	}
	wantRefused := func(call string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "is on network aaaaaaaaaaaa, not on network bbbbbbbbbbbb") {
			t.Errorf("%s with the wrong network: err = %v, want a refusal naming both networks", call, err)
		}
	}
	_, err := h.d.Join(&network.JoinRequest{NetworkID: netB, EndpointID: id, SandboxKey: "/x"})
	wantRefused("Join", err)
	wantRefused("ProgramExternalConnectivity", h.d.ProgramExternalConnectivity(&network.ProgramExternalConnectivityRequest{NetworkID: netB, EndpointID: id}))
	wantRefused("RevokeExternalConnectivity", h.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{NetworkID: netB, EndpointID: id}))
	wantRefused("Leave", h.d.Leave(&network.LeaveRequest{NetworkID: netB, EndpointID: id}))
	wantRefused("DeleteEndpoint", h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netB, EndpointID: id}))

	ep, err := h.st.Endpoint(id)
	if err != nil || ep == nil || !ep.Joined || ep.Sandbox != "/var/run/docker/netns/x" {
		t.Fatalf("endpoint record after wrong-network calls = %+v, %v; want it joined and unchanged", ep, err)
	}
	if !h.links.Names()["vxh"+id[:12]] {
		t.Error("the endpoint's veth was deleted by a wrong-network call")
	}
	// The right network still works, and a missing endpoint stays a no-op.
	if err := h.d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: id}); err != nil {
		t.Error(err)
	}
	if err := h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: id}); err != nil {
		t.Error(err)
	}
	if err := h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netB, EndpointID: id}); err != nil {
		t.Errorf("DeleteEndpoint of a gone endpoint: %v", err)
	}
}
