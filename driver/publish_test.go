package driver

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/driver/ports"
	"github.com/vxbridge/vxbridge/internal/testutil/fakes"
	"github.com/vxbridge/vxbridge/portproxy"
	"github.com/vxbridge/vxbridge/store"
)

type portsHarness struct {
	*harness
	res *fakes.Ports
}

// newPortsHarness has network netA (10.10.0.0/24) with endpoint epID(1)
// at 10.10.0.2, joined.
func newPortsHarness(t *testing.T) *portsHarness {
	t.Helper()
	h := newPortsHarnessEmpty(t)
	mustCreate(t, h.harness, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	h.endpoint(t, netA, epID(1), "10.10.0.2/24")
	return h
}

func (h *portsHarness) endpoint(t *testing.T, netID, id, addr string) {
	t.Helper()
	if _, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: id,
		Interface: &network.EndpointInterface{Address: addr}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.d.Join(&network.JoinRequest{NetworkID: netID, EndpointID: id, SandboxKey: "/x"}); err != nil {
		t.Fatal(err)
	}
}

// portmap is docker's option as it arrives (see fakes.PortBindings).
func portmap(specs ...string) map[string]interface{} {
	return map[string]interface{}{ports.OptionKey: fakes.PortBindings(specs...), "com.docker.network.endpoint.exposedports": []interface{}{}}
}

func (h *portsHarness) program(netID, id string, specs ...string) error {
	return h.d.ProgramExternalConnectivity(&network.ProgramExternalConnectivityRequest{NetworkID: netID, EndpointID: id, Options: portmap(specs...)})
}

func (h *portsHarness) storedPorts(t *testing.T, id string) []string {
	t.Helper()
	ep, err := h.st.Endpoint(id)
	if err != nil || ep == nil {
		t.Fatalf("endpoint %s: %v, %v", id, ep, err)
	}
	var out []string
	for _, m := range ep.Ports {
		out = append(out, m.String())
	}
	return out
}

func TestPublishAndRevoke(t *testing.T) {
	h := newPortsHarness(t)
	id := epID(1)
	if err := h.program(netA, id, ":8080:80/tcp", "127.0.0.1:5353:53/udp"); err != nil {
		t.Fatal(err)
	}
	want := []string{"0.0.0.0:8080->80/tcp", "[::]:8080->80/tcp", "127.0.0.1:5353->53/udp"}
	if got := h.storedPorts(t, id); !slices.Equal(got, want) {
		t.Errorf("stored %q, want %q", got, want)
	}
	if got := h.res.Keys(); !slices.Equal(got, []string{"tcp 0.0.0.0:8080", "tcp [::]:8080", "udp 127.0.0.1:5353"}) {
		t.Errorf("held %q", got)
	}
	fw := h.fw.Ports[id]
	if fw.Bridge != "vxb-aaaaaaaaaaa" || fw.NetworkID != netA || len(fw.Mappings) != 3 || fw.Subnets[0] != netip.MustParsePrefix("10.10.0.0/24") {
		t.Errorf("firewall ports = %+v", fw)
	}
	info, err := h.d.EndpointInfo(&network.InfoRequest{NetworkID: netA, EndpointID: id})
	if err != nil || info.Value[keyPortsInfo] != strings.Join(want, ", ") {
		t.Errorf("EndpointOperInfo = %v, %v", info, err)
	}

	if err := h.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{NetworkID: netA, EndpointID: id}); err != nil {
		t.Fatal(err)
	}
	if got := h.storedPorts(t, id); len(got) != 0 {
		t.Errorf("stored after revoke: %q", got)
	}
	if len(h.res.Keys()) != 0 || len(h.fw.Ports) != 0 || len(h.fw.Removed) != 1 || len(h.fw.Removed[0].Mappings) != 3 {
		t.Errorf("after revoke: held %q, rules %v, removed %v", h.res.Keys(), h.fw.Ports, h.fw.Removed)
	}
	// Unknown endpoints and endpoints without ports: success.
	for _, id := range []string{id, epID(99)} {
		if err := h.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{NetworkID: netA, EndpointID: id}); err != nil {
			t.Errorf("revoke %s: %v", id, err)
		}
	}
	if err := h.program(netA, id); err != nil || len(h.res.Keys()) != 0 {
		t.Errorf("no ports: %v, held %q", err, h.res.Keys())
	}
}

func TestConflictingPortRefusedAndNothingLeft(t *testing.T) {
	h := newPortsHarness(t)
	mustCreate(t, h.harness, createReq(netB, "10.20.0.0/24", "10.20.0.1/24", nil))
	h.endpoint(t, netB, epID(2), "10.20.0.2/24")
	if err := h.program(netA, epID(1), ":8080:80/tcp", "192.0.2.1:9090:90/udp"); err != nil {
		t.Fatal(err)
	}
	held := h.res.Keys()
	for _, c := range []struct {
		specs []string
		why   string
	}{
		{[]string{":8080:80/tcp"}, "endpoint 000000000001 of vxbridge network aaaaaaaaaaaa"}, // same port, another network
		{[]string{"192.0.2.5:8080:80/tcp"}, "endpoint 000000000001"},                         // inside the wildcard
		{[]string{":9090:90/udp"}, "endpoint 000000000001"},                                  // a wildcard over a held address
		{[]string{":7070:70/tcp", ":7070:71/tcp"}, "asks for it twice"},
		{[]string{":6060:60/tcp"}, "another process"}, // v6 half busy: the v4 half goes too
		{[]string{":7000-7001:80/tcp", ":7000-7001:80/tcp", ":7000-7001:80/tcp"}, "every port of the range"},
	} {
		h.res.Busy["tcp [::]:6060"] = true
		err := h.program(netB, epID(2), c.specs...)
		if err == nil || !strings.Contains(err.Error(), "port is already allocated") || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%q: err = %v, want a refusal naming %q", c.specs, err, c.why)
		}
		if got := h.res.Keys(); !slices.Equal(got, held) {
			t.Errorf("%q: held %q after the refusal, want %q", c.specs, got, held)
		}
		if got := h.storedPorts(t, epID(2)); len(got) != 0 {
			t.Errorf("%q: stored %q", c.specs, got)
		}
		if _, ok := h.fw.Ports[epID(2)]; ok {
			t.Errorf("%q: firewall rules installed", c.specs)
		}
	}
	// Other protocols, families and addresses are free.
	if err := h.program(netB, epID(2), ":8080:80/udp", "192.0.2.2:9090:90/tcp", "192.0.2.2:9091:90/udp"); err != nil {
		t.Errorf("non-overlapping ports refused: %v", err)
	}
}

func TestProgramReplayKeepsPortsAndChangeReplaces(t *testing.T) {
	h := newPortsHarness(t)
	if err := h.program(netA, epID(1), "::80/tcp", ":8080:81/tcp"); err != nil {
		t.Fatal(err)
	}
	first := h.storedPorts(t, epID(1))
	reserves := h.res.Reserves
	if err := h.program(netA, epID(1), "::80/tcp", ":8080:81/tcp"); err != nil {
		t.Fatal(err)
	}
	if got := h.storedPorts(t, epID(1)); !slices.Equal(got, first) || len(h.fw.Removed) != 0 {
		t.Errorf("replay changed the ports: %q -> %q, removed %v", first, got, h.fw.Removed)
	}
	if h.res.Reserves != reserves+len(first) {
		t.Errorf("replay reserved %d times, want %d (each held port once, idempotently)", h.res.Reserves-reserves, len(first))
	}
	if err := h.program(netA, epID(1), ":8081:81/tcp"); err != nil {
		t.Fatal(err)
	}
	if got := h.storedPorts(t, epID(1)); !slices.Equal(got, []string{"0.0.0.0:8081->81/tcp", "[::]:8081->81/tcp"}) {
		t.Errorf("after a different portmap: %q", got)
	}
	if got := h.res.Keys(); !slices.Equal(got, []string{"tcp 0.0.0.0:8081", "tcp [::]:8081"}) {
		t.Errorf("held %q", got)
	}
}

func TestLeaveAndDeleteEndpointWithdrawPorts(t *testing.T) {
	h := newPortsHarness(t)
	h.endpoint(t, netA, epID(2), "10.10.0.3/24")
	for _, id := range []string{epID(1), epID(2)} {
		if err := h.program(netA, id, "::80/tcp"); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: epID(1)}); err != nil {
		t.Fatal(err)
	}
	if got := h.storedPorts(t, epID(1)); len(got) != 0 {
		t.Errorf("ports stored after Leave: %q", got)
	}
	if err := h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: epID(2)}); err != nil {
		t.Fatal(err)
	}
	if len(h.res.Keys()) != 0 || len(h.fw.Ports) != 0 || len(h.fw.Removed) != 2 {
		t.Errorf("left: held %q, rules %v", h.res.Keys(), h.fw.Ports)
	}
}

func TestPublishRollsBackOnFailure(t *testing.T) {
	h := newPortsHarness(t)
	h.fw.FailPorts = errors.New("iptables-restore refused")
	if err := h.program(netA, epID(1), ":8080:80/tcp"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("err = %v, want the firewall's", err)
	}
	if len(h.res.Keys()) != 0 || len(h.storedPorts(t, epID(1))) != 0 {
		t.Errorf("left: held %q, stored %q", h.res.Keys(), h.storedPorts(t, epID(1)))
	}
	h.fw.FailPorts = nil
	h.st.failSaveEndpoint = true
	if err := h.program(netA, epID(1), ":8080:80/tcp"); !errors.Is(err, errDisk) {
		t.Errorf("err = %v, want the store's", err)
	}
	if len(h.res.Keys()) != 0 || len(h.fw.Ports) != 0 {
		t.Errorf("left: held %q, rules %v", h.res.Keys(), h.fw.Ports)
	}
}

func TestProgramRefusals(t *testing.T) {
	h := newPortsHarness(t)
	if err := h.program(netA, epID(9), ":80:80/tcp"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "000000000009") {
		t.Errorf("unknown endpoint: %v", err)
	}
	if err := h.program(netB, epID(1), ":80:80/tcp"); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown network: %v", err)
	}
	err := h.d.ProgramExternalConnectivity(&network.ProgramExternalConnectivityRequest{NetworkID: netA, EndpointID: epID(1),
		Options: map[string]interface{}{ports.OptionKey: "junk"}})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("junk portmap: %v", err)
	}
}

func TestReconcileRestoresPublishedPorts(t *testing.T) {
	h := newPortsHarness(t)
	if err := h.program(netA, epID(1), ":8080:80/tcp"); err != nil {
		t.Fatal(err)
	}
	// What a restart finds: no sockets, no rules; a record whose network
	// is gone must not be published.
	h.res.Held = map[string]portproxy.Mapping{}
	h.fw.Ports = nil
	orphan := store.Endpoint{ID: epID(5), NetworkID: netB, HostVeth: "vxh5", MAC: "02:00:00:00:00:05",
		Ports: []store.PortMapping{{Proto: "tcp", HostIP: netip.IPv4Unspecified(), HostPort: 9999, ContainerIP: netip.MustParseAddr("10.20.0.5"), ContainerPort: 80}}}
	if err := h.st.SaveEndpoint(&orphan); err != nil {
		t.Fatal(err)
	}
	h.res.Busy["tcp [::]:8080"] = true // taken while vxbridge was down
	_, err := h.d.Reconcile()
	if err == nil || !strings.Contains(err.Error(), "[::]:8080") {
		t.Errorf("Reconcile = %v, want it to report the port it could not hold", err)
	}
	if got := h.res.Keys(); !slices.Equal(got, []string{"tcp 0.0.0.0:8080"}) {
		t.Errorf("held after reconcile: %q", got)
	}
	if p, ok := h.fw.Ports[epID(1)]; !ok || len(p.Mappings) != 2 || len(h.fw.Ports) != 1 {
		t.Errorf("firewall ports after reconcile: %v", h.fw.Ports)
	}
}
