package driver

import (
	"net/netip"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/cluster"
)

// fakeLearner records what the driver asks, and lets the test say when a
// name is found.
type fakeLearner struct {
	mu     sync.Mutex
	found  map[string]func(name, domain string)
	asked  map[string]string // endpoint -> sandbox
	forgot []string
}

func newFakeLearner() *fakeLearner {
	return &fakeLearner{found: map[string]func(string, string){}, asked: map[string]string{}}
}

func (l *fakeLearner) Learn(id, sandbox string, addr netip.Addr, found func(name, domain string)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.asked[id], l.found[id] = sandbox+" "+addr.String(), found
}

func (l *fakeLearner) Forget(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forgot = append(l.forgot, id)
}

func (l *fakeLearner) callback(id string) func(string, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.found[id]
}

func (h *xhHarness) published(id string) (cluster.Endpoint, bool) {
	h.cl.mu.Lock()
	defer h.cl.mu.Unlock()
	ep, ok := h.cl.published[id]
	return ep, ok
}

// TestNamesPublishedAfterJoin: Join asks for the container's name without
// waiting; once found it is published with the endpoint's record, Leave
// takes it back, and a name found after Leave is not published.
func TestNamesPublishedAfterJoin(t *testing.T) {
	h := newXHHarness(t)
	learner := newFakeLearner()
	h.d.xh.cfg.Names = learner
	h.d.xh.cfg.NamesPort = 5335
	mustCreate(t, h.harness, xhReq("42", ""))
	if got := h.fw.Nets[netA].NamesPort; got != 5335 {
		t.Fatalf("firewall network names port %d, want 5335", got)
	}
	id := epID(1)
	if _, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: id,
		Interface: &network.EndpointInterface{Address: "10.42.0.2/24"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: id, SandboxKey: "/var/run/docker/netns/c1"}); err != nil {
		t.Fatal(err)
	}
	if got := learner.asked[id]; got != "/var/run/docker/netns/c1 10.42.0.2" {
		t.Fatalf("learner asked %q", got)
	}
	learner.callback(id)("web", "xnet")
	if ep, _ := h.published(id); ep.Name != "web" || ep.Domain != "xnet" || ep.IPv4 != netip.MustParseAddr("10.42.0.2") {
		t.Fatalf("published %+v, want the record with web.xnet", ep)
	}
	// A reconcile (a restart's re-publish) keeps the name.
	if _, err := h.d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if ep, _ := h.published(id); ep.Name != "web" {
		t.Fatalf("after a reconcile: %+v", ep)
	}
	found := learner.callback(id)
	if err := h.d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: id}); err != nil {
		t.Fatal(err)
	}
	if ep, ok := h.published(id); !ok || ep.Name != "" {
		t.Fatalf("after Leave: %+v %v, want the record without its name", ep, ok)
	}
	found("late", "xnet") // a search that ended after Leave
	if ep, _ := h.published(id); ep.Name != "" {
		t.Fatalf("a name found after Leave was published: %+v", ep)
	}
	if len(learner.forgot) == 0 || learner.forgot[0] != id {
		t.Fatalf("forgot %v", learner.forgot)
	}
}
