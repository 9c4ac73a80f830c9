package driver

import (
	"net/netip"
	"slices"
	"sort"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/internal/testutil/fakes"
	"github.com/vxbridge/vxbridge/ownership/mark"
	"github.com/vxbridge/vxbridge/vxlan"
)

const fakeHostFd = 99

type fakeNS struct {
	links    *fakes.Links
	vx       *fakeVXLAN
	prepared int
}

func (n *fakeNS) Links() Links   { return n.links }
func (n *fakeNS) VXLAN() VXLAN   { return n.vx }
func (n *fakeNS) Prepare() error { n.prepared++; return nil }

// fakeSpaces is an in-memory set of namespaces, each with its own links
// and VXLAN devices.
type fakeSpaces struct {
	mu sync.Mutex
	ns map[string]*fakeNS
}

func (s *fakeSpaces) Ensure(name string) (NetNS, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ns[name] == nil {
		s.ns[name] = &fakeNS{links: fakes.NewLinks(), vx: &fakeVXLAN{devices: map[string]vxlan.Device{}, tables: map[string]vxlan.Table{}}}
	}
	return s.ns[name], nil
}

func (s *fakeSpaces) Open(name string) (NetNS, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ns := s.ns[name]; ns != nil {
		return ns, true, nil
	}
	return nil, false, nil
}

func (s *fakeSpaces) Delete(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ns, name)
	return nil
}

func (s *fakeSpaces) List() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.ns {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

func (s *fakeSpaces) HostFd() int { return fakeHostFd }

func (s *fakeSpaces) get(name string) *fakeNS {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ns[name]
}

// newNSHarness is newXHHarness with network namespaces.
func newNSHarness(t *testing.T) (*xhHarness, *fakeSpaces) {
	t.Helper()
	h := newXHHarness(t)
	spaces := &fakeSpaces{ns: map[string]*fakeNS{}}
	cfg := h.d.xh.cfg
	h.d = New(Config{Store: h.st, Links: h.links, Firewall: h.fw, CrossHost: &cfg, Namespaces: spaces})
	return h, spaces
}

// A cross-host network lives in a namespace of its own: bridge, VXLAN
// device and the host ends of its endpoints there, the gateway addresses
// on the gateway link's host end under the bridge's name, the firewall
// rules on that name; docker's end of each veth in the host's namespace.
func TestCrossHostNetworkInItsNamespace(t *testing.T) {
	h, spaces := newNSHarness(t)
	mustCreate(t, h.harness, xhReq("42", ""))
	const nsName, br = "vxbridge-aaaaaaaaaaaa", "vxb-aaaaaaaaaaa"
	ns := spaces.get(nsName)
	if ns == nil {
		t.Fatalf("no namespace %s; have %v", nsName, spaces.ns)
	}
	if rec, _ := h.st.Network(netA); rec == nil || rec.NetNS != nsName {
		t.Fatalf("record: %+v, want netns %s", rec, nsName)
	}
	if b, ok := ns.links.Bridges[br]; !ok || len(b.Addrs) != 0 || b.MTU != 1450 {
		t.Errorf("bridge in the namespace: %+v (present %t), want no addresses, mtu 1450", b, ok)
	}
	if gw := ns.links.Veths[gatewayInner]; gw.PeerName != br || gw.PeerNS != fakeHostFd || !gw.PeerBuilding || gw.Bridge != br || gw.Isolated {
		t.Errorf("gateway link from the namespace: %+v", gw)
	}
	if gw, ok := h.links.Gateways[br]; !ok || len(gw.Addrs) != 1 || gw.Addrs[0] != netip.MustParsePrefix("10.42.0.1/24") || gw.Alias != mark.Alias("", mark.Net, netA) {
		t.Errorf("gateway link's host end: %+v (present %t)", gw, ok)
	}
	if _, ok := h.links.Bridges[br]; ok {
		t.Error("a bridge in the host's namespace too")
	}
	if _, ok := ns.vx.devices["vxv-2a"]; !ok || len(h.vx.devices) != 0 {
		t.Errorf("vxlan device: namespace %v, host %v; want it in the namespace only", ns.vx.devices, h.vx.devices)
	}
	if fw := h.fw.Nets[netA]; fw.Bridge != br {
		t.Errorf("firewall on %q, want the gateway link %s", fw.Bridge, br)
	}
	if ns.prepared == 0 {
		t.Error("namespace not prepared")
	}

	// An endpoint: host end in the namespace, docker's end in the host's.
	if _, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epID(1),
		Interface: &network.EndpointInterface{Address: "10.42.0.5/24"}}); err != nil {
		t.Fatal(err)
	}
	veth, ok := ns.links.Veths["vxh"+epID(1)[:12]]
	if !ok || veth.PeerNS != fakeHostFd || veth.PeerBuilding || veth.Bridge != br {
		t.Fatalf("endpoint veth in the namespace: %+v (present %t)", veth, ok)
	}
	if h.links.Names()["vxh"+epID(1)[:12]] {
		t.Error("endpoint host end in the host's namespace")
	}
	if _, err := h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: epID(1), SandboxKey: "/x"}); err != nil {
		t.Fatal(err)
	}

	// Reconcile: an orphan link in the namespace and an orphan namespace go;
	// what the records claim stays.
	ns.links.EnsureVeth(bridge.VethConfig{HostName: "vxhorphan", PeerName: "vxcorphan", Bridge: br, Alias: mark.Alias("", mark.Endpoint, epID(9))})
	spaces.Ensure("vxbridge-0123456789ab")
	rep, err := h.d.Reconcile()
	if err != nil {
		t.Fatal(err)
	}
	if names, _ := spaces.List(); !slices.Equal(names, []string{nsName}) {
		t.Errorf("namespaces after reconcile: %v", names)
	}
	if ns.links.Names()["vxhorphan"] || !ns.links.Names()["vxh"+epID(1)[:12]] || !ns.links.Names()[gatewayInner] || !ns.links.Names()[br] {
		t.Errorf("links in the namespace after reconcile: %v (report %+v)", ns.links.Names(), rep)
	}
	// A namespace lost (say, a reboot): Reconcile builds it again.
	spaces.Delete(nsName)
	if _, err := h.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	ns = spaces.get(nsName)
	if ns == nil || !ns.links.Names()[br] || !ns.links.Names()[gatewayInner] {
		t.Fatalf("namespace not rebuilt by reconcile: %+v", ns)
	}

	// A joined endpoint's veth went with the namespace (its container end
	// too): it waits for docker's delete, not re-created.
	if ns.links.Names()["vxh"+epID(1)[:12]] {
		t.Error("a joined endpoint's veth re-created in the rebuilt namespace")
	}

	// Deleting: a veth is retired in the namespace; the network takes its
	// namespace and gateway link.
	if _, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epID(2),
		Interface: &network.EndpointInterface{Address: "10.42.0.6/24"}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{epID(1), epID(2)} {
		if err := h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if got := ns.links.Retired; len(got) != 1 || got[0] != "vxh"+epID(2)[:12] {
		t.Errorf("retired in the namespace: %v", got)
	}
	if err := h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}); err != nil {
		t.Fatal(err)
	}
	if names, _ := spaces.List(); len(names) != 0 {
		t.Errorf("namespaces left: %v", names)
	}
	if h.links.Names()[br] {
		t.Error("gateway link left in the host's namespace")
	}
}

// icc=false isolates the VXLAN port too: containers are kept apart across
// hosts as on one.
func TestCrossHostNoICCIsolatesVXLANPort(t *testing.T) {
	h, spaces := newNSHarness(t)
	req := xhReq("42", "")
	req.Options[keyGeneric].(map[string]interface{})[OptICC] = "false"
	mustCreate(t, h.harness, req)
	if dev := spaces.get("vxbridge-aaaaaaaaaaaa").vx.devices["vxv-2a"]; !dev.Isolated {
		t.Errorf("vxlan device of an icc=false network: %+v, want isolated", dev)
	}
}

// Networks without a VNI, and cross-host networks recorded before
// namespaces (no NetNS in the record), keep everything in the host's.
func TestLocalNetworkHasNoNamespace(t *testing.T) {
	h, spaces := newNSHarness(t)
	mustCreate(t, h.harness, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	if names, _ := spaces.List(); len(names) != 0 {
		t.Errorf("namespaces: %v", names)
	}
	if _, ok := h.links.Bridges["vxb-aaaaaaaaaaa"]; !ok {
		t.Error("no bridge in the host's namespace")
	}
}

// Status and a network delete read a lost namespace as lost: they never
// make it again (only the reconciler does).
func TestLostNamespaceNotRecreatedByStatusOrDelete(t *testing.T) {
	h, spaces := newNSHarness(t)
	mustCreate(t, h.harness, xhReq("42", ""))
	const nsName = "vxbridge-aaaaaaaaaaaa"
	spaces.Delete(nsName)
	nets, _, err := h.d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(nets) != 1 || nets[0].Health.OK || nets[0].NetNS != nsName {
		t.Errorf("status of a network whose namespace is gone: %+v", nets)
	}
	if spaces.get(nsName) != nil {
		t.Fatal("Status made the namespace again")
	}
	if err := h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}); err != nil {
		t.Fatal(err)
	}
	if names, _ := spaces.List(); len(names) != 0 {
		t.Errorf("namespaces after deleting the network: %v", names)
	}
}
