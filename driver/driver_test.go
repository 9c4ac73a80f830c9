package driver

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/internal/testutil/fakes"
	"github.com/vxbridge/vxbridge/ownership/mark"
)

const (
	netA = "aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111"
	netB = "bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222"
)

func epID(i int) string { return fmt.Sprintf("%012x%052d", i, i) }

func createReq(id, pool, gw string, generic map[string]interface{}) *network.CreateNetworkRequest {
	if generic == nil {
		generic = map[string]interface{}{}
	}
	return &network.CreateNetworkRequest{
		NetworkID: id,
		Options:   map[string]interface{}{keyGeneric: generic, keyEnableIPv6: false},
		IPv4Data:  []*network.IPAMData{{AddressSpace: "x", Pool: pool, Gateway: gw}},
	}
}

func mustCreate(t *testing.T, h *harness, req *network.CreateNetworkRequest) {
	t.Helper()
	if err := h.d.CreateNetwork(req); err != nil {
		t.Fatalf("CreateNetwork: %v", err)
	}
}

func TestCreateNetworkBuildsBridgeRulesAndRecord(t *testing.T) {
	h := newHarness(t)
	req := createReq(netA, "10.10.0.0/24", "10.10.0.1/24", map[string]interface{}{OptMTU: "1400", OptICC: "false"})
	req.Options[keyEnableIPv6] = true
	req.IPv6Data = []*network.IPAMData{{Pool: "fd00:10::/64", Gateway: "fd00:10::1/64"}}
	mustCreate(t, h, req)

	br, ok := h.links.Bridges["vxb-aaaaaaaaaaa"]
	if !ok {
		t.Fatalf("bridge vxb-aaaaaaaaaaa not created; links: %v", h.links.Names())
	}
	if br.MTU != 1400 || len(br.Addrs) != 2 || br.Addrs[0].String() != "10.10.0.1/24" || br.Addrs[1].String() != "fd00:10::1/64" {
		t.Errorf("bridge config = %+v", br)
	}
	fw, ok := h.fw.Nets[netA]
	if !ok || fw.ICC || !fw.Masquerade || len(fw.Subnets) != 2 {
		t.Errorf("firewall network = %+v (installed %v)", fw, ok)
	}
	n, err := h.st.Network(netA)
	if err != nil || n == nil || n.MTU != 1400 || n.ICC || !n.EnableIPv6 {
		t.Errorf("stored network = %+v, %v", n, err)
	}
	if !h.links.Forwarding {
		t.Error("forwarding not enabled for a non-internal network")
	}
}

func TestCreateNetworkRefusesBadInputNamingIt(t *testing.T) {
	cases := []struct {
		name    string
		generic map[string]interface{}
		pool    string
		want    string
	}{
		{"unknown option", map[string]interface{}{"bogus.option": "1"}, "10.1.0.0/24", `"bogus.option"`},
		{"mtu too big", map[string]interface{}{OptMTU: "70000"}, "10.1.0.0/24", OptMTU},
		{"mtu not a number", map[string]interface{}{OptMTU: "big"}, "10.1.0.0/24", `"big"`},
		{"docker's bridge name", map[string]interface{}{OptBridgeName: "br-0123"}, "10.1.0.0/24", "docker's"},
		{"bridge name too long", map[string]interface{}{OptBridgeName: "a-very-long-bridge-name"}, "10.1.0.0/24", OptBridgeName},
		{"icc not bool", map[string]interface{}{OptICC: "maybe"}, "10.1.0.0/24", OptICC},
		{"host binding not v4", map[string]interface{}{OptHostBindingIPv4: "::1"}, "10.1.0.0/24", OptHostBindingIPv4},
		{"bad cidr", nil, "10.1.0.0/33", "10.1.0.0/33"},
		{"host bits", nil, "10.1.0.7/24", "did you mean 10.1.0.0/24"},
		{"option wrong type", map[string]interface{}{OptMTU: []interface{}{1}}, "10.1.0.0/24", OptMTU},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			err := h.d.CreateNetwork(createReq(netA, c.pool, "", c.generic))
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want an ErrInvalid naming %s", err, c.want)
			}
			if len(h.links.Names()) != 0 || len(h.fw.Nets) != 0 {
				t.Errorf("bad input changed state: links %v, rules %v", h.links.Names(), h.fw.Nets)
			}
		})
	}
}

func TestCreateNetworkConflicts(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/16", "10.10.0.1/16", map[string]interface{}{OptBridgeName: "vxshared"}))

	err := h.d.CreateNetwork(createReq(netB, "10.10.5.0/24", "10.10.5.1/24", nil))
	if err == nil || !strings.Contains(err.Error(), "overlaps subnet 10.10.0.0/16 of vxbridge network aaaaaaaaaaaa") {
		t.Errorf("overlap: err = %v", err)
	}
	err = h.d.CreateNetwork(createReq(netB, "10.20.0.0/24", "", map[string]interface{}{OptBridgeName: "vxshared"}))
	if err == nil || !strings.Contains(err.Error(), `bridge name "vxshared" is already used by vxbridge network aaaaaaaaaaaa`) {
		t.Errorf("bridge name: err = %v", err)
	}
	h.links.Links["eth9"] = bridge.LinkInfo{Name: "eth9", Kind: "dummy"}
	err = h.d.CreateNetwork(createReq(netB, "10.20.0.0/24", "", map[string]interface{}{OptBridgeName: "eth9"}))
	if err == nil || !strings.Contains(err.Error(), "vxbridge does not own") {
		t.Errorf("foreign interface: err = %v", err)
	}
	if _, err := h.st.Network(netB); err != nil {
		t.Fatal(err)
	}
	if n, _ := h.st.Network(netB); n != nil {
		t.Errorf("refused network was stored: %+v", n)
	}
}

func TestCreateNetworkRollsBackOnFailure(t *testing.T) {
	h := newHarness(t)
	h.fw.FailEnsure = errors.New("iptables exploded")
	if err := h.d.CreateNetwork(createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil)); err == nil {
		t.Fatal("CreateNetwork succeeded with a failing firewall")
	}
	if len(h.links.Names()) != 0 {
		t.Errorf("bridge left behind: %v", h.links.Names())
	}
	h.fw.FailEnsure = nil
	h.st.failSaveNetwork = true
	if err := h.d.CreateNetwork(createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil)); !errors.Is(err, errDisk) {
		t.Fatalf("err = %v, want the store's error", err)
	}
	if len(h.links.Names()) != 0 || len(h.fw.Nets) != 0 {
		t.Errorf("left behind after a failed save: links %v, rules %v", h.links.Names(), h.fw.Nets)
	}
}

func TestCreateNetworkReplayIsHarmless(t *testing.T) {
	h := newHarness(t)
	req := createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil)
	mustCreate(t, h, req)
	delete(h.links.Links, "vxb-aaaaaaaaaaa") // replay also repairs
	delete(h.links.Bridges, "vxb-aaaaaaaaaaa")
	mustCreate(t, h, req)
	if _, ok := h.links.Bridges["vxb-aaaaaaaaaaa"]; !ok {
		t.Error("replayed CreateNetwork did not converge the bridge")
	}
}

func TestDeletesOfUnknownIDsSucceed(t *testing.T) {
	h := newHarness(t)
	if err := h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}); err != nil {
		t.Error(err)
	}
	if err := h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: epID(1)}); err != nil {
		t.Error(err)
	}
	if err := h.d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: epID(1)}); err != nil {
		t.Error(err)
	}
	if err := h.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{NetworkID: netA, EndpointID: epID(1)}); err != nil {
		t.Error(err)
	}
}

func createEndpoint(t *testing.T, h *harness, id, addr, mac string) *network.CreateEndpointResponse {
	t.Helper()
	resp, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{
		NetworkID: netA, EndpointID: id,
		Interface: &network.EndpointInterface{Address: addr, MacAddress: mac},
	})
	if err != nil {
		t.Fatalf("CreateEndpoint %s: %v", id, err)
	}
	return resp
}

func TestEndpointLifecycle(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", map[string]interface{}{OptICC: "false", OptMTU: "1400"}))
	id := epID(1)
	resp := createEndpoint(t, h, id, "10.10.0.2/24", "")
	mac, err := net.ParseMAC(resp.Interface.MacAddress)
	if err != nil || mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
		t.Fatalf("generated MAC %q is not unicast and locally administered (%v)", resp.Interface.MacAddress, err)
	}
	veth := h.links.Veths["vxh"+id[:12]]
	if veth.Bridge != "vxb-aaaaaaaaaaa" || !veth.Isolated || veth.MTU != 1400 || veth.PeerName != "vxc"+id[:12] || veth.MAC.String() != mac.String() {
		t.Errorf("veth config = %+v", veth)
	}
	join, err := h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: id, SandboxKey: "/var/run/docker/netns/x"})
	if err != nil {
		t.Fatal(err)
	}
	if join.InterfaceName.SrcName != "vxc"+id[:12] || join.InterfaceName.DstPrefix != "eth" || join.Gateway != "10.10.0.1" || join.GatewayIPv6 != "" {
		t.Errorf("join = %+v", join)
	}
	if ep, _ := h.st.Endpoint(id); ep == nil || !ep.Joined {
		t.Errorf("endpoint not recorded as joined: %+v", ep)
	}
	if err := h.d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: id}); err != nil {
		t.Fatal(err)
	}
	if err := h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: id}); err != nil {
		t.Fatal(err)
	}
	// The veth is retired: deleted by the kernel's reaper, in a batch.
	if got := h.links.Retired; len(got) != 1 || got[0] != "vxh"+id[:12] {
		t.Errorf("retired links after DeleteEndpoint = %v, want the host veth", got)
	}
	h.links.Flush()
	if h.links.Names()["vxh"+id[:12]] {
		t.Error("veth left after DeleteEndpoint and Flush")
	}
	if ep, _ := h.st.Endpoint(id); ep != nil {
		t.Errorf("record left after DeleteEndpoint: %+v", ep)
	}
}

func TestCreateEndpointDoesNotEchoDockersMAC(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	resp := createEndpoint(t, h, epID(2), "10.10.0.3/24", "02:42:0a:0a:00:03")
	if resp.Interface != nil {
		t.Errorf("response echoes docker's fields: %+v", resp.Interface)
	}
	if v := h.links.Veths["vxh"+epID(2)[:12]]; v.MAC.String() != "02:42:0a:0a:00:03" {
		t.Errorf("veth MAC = %v", v.MAC)
	}
}

func TestCreateEndpointRefusesAndRollsBack(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	_, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epID(3),
		Interface: &network.EndpointInterface{Address: "10.99.0.3/24"}})
	if err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("address outside subnet: err = %v", err)
	}
	_, err = h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netB, EndpointID: epID(3)})
	if err == nil || !strings.Contains(err.Error(), "bbbbbbbbbbbb") {
		t.Errorf("unknown network: err = %v", err)
	}
	h.st.failSaveEndpoint = true
	_, err = h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epID(3)})
	if !errors.Is(err, errDisk) {
		t.Fatalf("err = %v, want the store's error", err)
	}
	if h.links.Names()["vxh"+epID(3)[:12]] {
		t.Error("veth left behind after a failed save")
	}
}

func TestInternalNetworkJoinHasNoGateway(t *testing.T) {
	h := newHarness(t)
	req := createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil)
	req.Options[keyInternal] = true
	mustCreate(t, h, req)
	if h.links.Forwarding {
		t.Error("an internal network turned on forwarding")
	}
	createEndpoint(t, h, epID(4), "10.10.0.4/24", "")
	join, err := h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: epID(4)})
	if err != nil || join.Gateway != "" || join.GatewayIPv6 != "" {
		t.Errorf("join = %+v, %v; want no gateway", join, err)
	}
}

func TestDeleteNetworkTakesForgottenEndpoints(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	createEndpoint(t, h, epID(5), "10.10.0.5/24", "")
	if err := h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}); err != nil {
		t.Fatal(err)
	}
	h.links.Flush()
	if len(h.links.Names()) != 0 || len(h.fw.Nets) != 0 {
		t.Errorf("left behind: links %v, rules %v", h.links.Names(), h.fw.Nets)
	}
	if eps, _ := h.st.Endpoints(); len(eps) != 0 {
		t.Errorf("endpoint records left: %v", eps)
	}
}

func TestReconcileRestoresAndCleans(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	createEndpoint(t, h, epID(6), "10.10.0.6/24", "")
	createEndpoint(t, h, epID(7), "10.10.0.7/24", "")
	if _, err := h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: epID(7)}); err != nil {
		t.Fatal(err)
	}
	// A reboot: every link is gone. Plus an orphan veth of ours and a
	// foreign link that must be left alone.
	h.links = fakes.NewLinks()
	h.d.links = h.links
	h.links.Links["vxhdeadbeef0000"] = bridge.LinkInfo{Name: "vxhdeadbeef0000", Alias: mark.Alias("", mark.Endpoint, "deadbeef0000"), Kind: "veth"}
	h.links.Links["eth0"] = bridge.LinkInfo{Name: "eth0", Kind: "device"}
	h.fw.Nets = map[string]firewall.Network{}

	rep, err := h.d.Reconcile()
	if err != nil {
		t.Fatal(err)
	}
	names := h.links.Names()
	if !names["vxb-aaaaaaaaaaa"] || !names["vxh"+epID(6)[:12]] || !names["eth0"] || names["vxhdeadbeef0000"] {
		t.Errorf("links after reconcile: %v", names)
	}
	// The joined endpoint's container end lived in a sandbox that is gone:
	// its record stays (its address stays reserved) until docker deletes it.
	if names["vxh"+epID(7)[:12]] {
		t.Error("a veth was recreated for an endpoint whose sandbox is gone")
	}
	if ep, _ := h.st.Endpoint(epID(7)); ep == nil {
		t.Error("joined endpoint record dropped")
	}
	if _, ok := h.fw.Nets[netA]; !ok {
		t.Error("firewall rules not restored")
	}
	if len(rep.RemovedLinks) != 1 || rep.Networks != 1 || rep.Endpoints != 2 {
		t.Errorf("report = %+v", rep)
	}
}

func TestReconcileDropsEndpointsOfMissingNetworks(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	createEndpoint(t, h, epID(8), "10.10.0.8/24", "")
	if err := h.st.DB.DeleteNetwork(netA); err != nil { // a crash inside DeleteNetwork
		t.Fatal(err)
	}
	if _, err := h.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if len(h.links.Names()) != 0 {
		t.Errorf("links left: %v", h.links.Names())
	}
	if eps, _ := h.st.Endpoints(); len(eps) != 0 {
		t.Errorf("records left: %v", eps)
	}
}

func TestConcurrentEndpoints(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/16", "10.10.0.1/16", nil))
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	// Whole-state work runs meanwhile: it must neither see a veth whose
	// record is not written yet as a leftover nor block forever.
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			rep, err := h.d.Reconcile()
			if err != nil {
				errs <- fmt.Errorf("reconcile during endpoint calls: %w", err)
			} else if len(rep.RemovedLinks) != 0 {
				errs <- fmt.Errorf("reconcile during endpoint calls removed %v", rep.RemovedLinks)
			}
			if _, _, err := h.d.Status(); err != nil {
				errs <- err
			}
		}
	}()
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := epID(1000 + i)
			addr := fmt.Sprintf("10.10.%d.%d/16", 1+i/200, 2+i%200)
			if _, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: id,
				Interface: &network.EndpointInterface{Address: addr}}); err != nil {
				errs <- err
				return
			}
			if _, err := h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: id}); err != nil {
				errs <- err
				return
			}
			if i%2 == 0 {
				errs <- h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: id})
			}
		}()
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	eps, _ := h.st.Endpoints()
	if len(eps) != 50 {
		t.Errorf("%d endpoints stored, want 50", len(eps))
	}
	h.links.Flush()
	if got := len(h.links.Names()); got != 51 {
		t.Errorf("%d links, want the bridge and 50 veths", got)
	}
}
