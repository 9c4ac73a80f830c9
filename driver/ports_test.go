package driver

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/portproxy"
	"github.com/vxbridge/vxbridge/store"
)

// fakeReserver is an in-memory host: the ports vxbridge holds, and the ones
// other processes listen on (busy).
type fakeReserver struct {
	mu       sync.Mutex
	held     map[string]portproxy.Mapping // by "proto host"
	busy     map[string]bool
	noIPv6   bool
	lo, hi   uint16
	reserves int
}

func newFakeReserver() *fakeReserver {
	return &fakeReserver{held: map[string]portproxy.Mapping{}, busy: map[string]bool{}, lo: 40000, hi: 40009}
}

func reserverKey(m portproxy.Mapping) string { return m.Proto + " " + m.Host.String() }

func (f *fakeReserver) Reserve(m portproxy.Mapping) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reserves++
	if f.busy[reserverKey(m)] {
		return fmt.Errorf("%w: %s", portproxy.ErrInUse, reserverKey(m))
	}
	f.held[reserverKey(m)] = m
	return nil
}

func (f *fakeReserver) Release(m portproxy.Mapping) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.held, reserverKey(m))
}

func (f *fakeReserver) Sync(want []portproxy.Mapping) error {
	f.mu.Lock()
	f.held = map[string]portproxy.Mapping{}
	f.mu.Unlock()
	var errs []error
	for _, m := range want {
		errs = append(errs, f.Reserve(m))
	}
	return errors.Join(errs...)
}

func (f *fakeReserver) IPv6() bool                                 { return !f.noIPv6 }
func (f *fakeReserver) EphemeralRange() (lo, hi uint16, err error) { return f.lo, f.hi, nil }

func (f *fakeReserver) keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.held {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

type portsHarness struct {
	*harness
	res *fakeReserver
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

// portmap is docker's option as it arrives, JSON-decoded: numbers are
// float64. Each spec is "HOSTIP:HOSTPORT[-END]:PORT/PROTO", HOSTIP and
// HOSTPORT possibly empty.
func portmap(specs ...string) map[string]interface{} {
	var list []interface{}
	for _, s := range specs {
		rest, proto, _ := strings.Cut(s, "/")
		i := strings.LastIndex(rest, ":")
		hostPart, port := rest[:i], rest[i+1:]
		j := strings.LastIndex(hostPart, ":")
		hostIP, hostPorts := strings.Trim(hostPart[:j], "[]"), hostPart[j+1:]
		lo, hi, _ := strings.Cut(hostPorts, "-")
		num := func(s string) float64 {
			var n float64
			fmt.Sscan(s, &n)
			return n
		}
		list = append(list, map[string]interface{}{"Proto": float64(map[string]int{"tcp": 6, "udp": 17, "sctp": 132}[proto]),
			"IP": "", "Port": num(port), "HostIP": hostIP, "HostPort": num(lo), "HostPortEnd": num(hi)})
	}
	return map[string]interface{}{keyPortMap: list, "com.docker.network.endpoint.exposedports": []interface{}{}}
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

func TestParsePortMap(t *testing.T) {
	binds, err := parsePortMap(portmap(":8080:80/tcp", "127.0.0.1:5353:53/udp", ":9000-9010:80/tcp", "[::1]::443/sctp"))
	if err != nil {
		t.Fatal(err)
	}
	want := []portBinding{
		{Proto: 6, Port: 80, HostPort: 8080},
		{Proto: 17, Port: 53, HostIP: "127.0.0.1", HostPort: 5353},
		{Proto: 6, Port: 80, HostPort: 9000, HostPortEnd: 9010},
		{Proto: 132, Port: 443, HostIP: "::1"},
	}
	if !slices.Equal(binds, want) {
		t.Errorf("parsed %+v\nwant %+v", binds, want)
	}
	if binds, err := parsePortMap(map[string]interface{}{}); err != nil || binds != nil {
		t.Errorf("no portmap: %v, %v", binds, err)
	}
	for name, opts := range map[string]map[string]interface{}{
		"protocol":       portmap(":80:80/icmp"),
		"container 0":    portmap(":80:0/tcp"),
		"reversed range": portmap(":90-80:80/tcp"),
		"range from 0":   portmap(":0-80:80/tcp"),
		"host address":   portmap("localhost:80:80/tcp"),
		"zoned address":  portmap("[fe80::1%eth0]:80:80/tcp"),
		"port too big":   {keyPortMap: []interface{}{map[string]interface{}{"Proto": 6.0, "Port": 70000.0}}},
		"not a list":     {keyPortMap: "8080:80"},
		"wrong type":     {keyPortMap: []interface{}{map[string]interface{}{"Proto": "tcp", "Port": 80.0}}},
	} {
		if _, err := parsePortMap(opts); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func TestExpandPorts(t *testing.T) {
	v4 := &store.Endpoint{IPv4: netip.MustParsePrefix("10.0.0.2/24")}
	dual := &store.Endpoint{IPv4: netip.MustParsePrefix("10.0.0.2/24"), IPv6: netip.MustParsePrefix("fd00::2/64")}
	v6 := &store.Endpoint{IPv6: netip.MustParsePrefix("fd00::2/64")}
	plain := &store.Network{}
	bound := &store.Network{HostBindingIPv4: netip.MustParseAddr("192.0.2.7")}
	for _, c := range []struct {
		name string
		n    *store.Network
		ep   *store.Endpoint
		spec string
		noV6 bool
		want []string // host -> container, "!" for an error
	}{
		{"v4 container, both host families", plain, v4, ":8080:80/tcp", false, []string{"0.0.0.0:8080 10.0.0.2:80", "[::]:8080 10.0.0.2:80"}},
		{"host without IPv6", plain, v4, ":8080:80/tcp", true, []string{"0.0.0.0:8080 10.0.0.2:80"}},
		{"dual stack", plain, dual, ":8080:80/udp", false, []string{"0.0.0.0:8080 10.0.0.2:80", "[::]:8080 [fd00::2]:80"}},
		{"v6 container", plain, v6, ":8080:80/tcp", false, []string{"[::]:8080 [fd00::2]:80"}},
		{"host_binding_ipv4", bound, dual, ":8080:80/tcp", false, []string{"192.0.2.7:8080 10.0.0.2:80"}},
		{"host_binding_ipv4, v6 container", bound, v6, ":8080:80/tcp", false, []string{"!"}},
		{"explicit v4", bound, dual, "127.0.0.1:8080:80/tcp", false, []string{"127.0.0.1:8080 10.0.0.2:80"}},
		{"explicit v4, v6 container", plain, v6, "127.0.0.1:8080:80/tcp", false, []string{"!"}},
		{"explicit v6, v4 container", plain, v4, "[::1]:8080:80/tcp", false, []string{"[::1]:8080 10.0.0.2:80"}},
		{"explicit v6, host without IPv6", plain, v4, "[::1]:8080:80/tcp", true, []string{"!"}},
		{"mapped v4", plain, v4, "[::ffff:192.0.2.1]:8080:80/tcp", false, []string{"192.0.2.1:8080 10.0.0.2:80"}},
		{"ephemeral", plain, v4, "::80/tcp", true, []string{"0.0.0.0:0 10.0.0.2:80"}},
	} {
		binds, err := parsePortMap(portmap(c.spec))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		wants, err := expandPorts(binds, c.n, c.ep, !c.noV6)
		var got []string
		for _, w := range wants {
			got = append(got, netip.AddrPortFrom(w.hostIP, w.lo).String()+" "+w.container.String())
		}
		if err != nil {
			got = []string{"!"}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: err = %v, want ErrInvalid", c.name, err)
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
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
	if got := h.res.keys(); !slices.Equal(got, []string{"tcp 0.0.0.0:8080", "tcp [::]:8080", "udp 127.0.0.1:5353"}) {
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
	if len(h.res.keys()) != 0 || len(h.fw.Ports) != 0 || len(h.fw.Removed) != 1 || len(h.fw.Removed[0].Mappings) != 3 {
		t.Errorf("after revoke: held %q, rules %v, removed %v", h.res.keys(), h.fw.Ports, h.fw.Removed)
	}
	// Unknown endpoints and endpoints without ports: success.
	for _, id := range []string{id, epID(99)} {
		if err := h.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{NetworkID: netA, EndpointID: id}); err != nil {
			t.Errorf("revoke %s: %v", id, err)
		}
	}
	if err := h.program(netA, id); err != nil || len(h.res.keys()) != 0 {
		t.Errorf("no ports: %v, held %q", err, h.res.keys())
	}
}

func TestEphemeralPortsRoundRobinSameForBothFamilies(t *testing.T) {
	h := newPortsHarness(t)
	h.d.nextPort = 8 // of 40000-40009
	h.res.busy["tcp [::]:40008"] = true
	h.endpoint(t, netA, epID(2), "10.10.0.3/24")
	if err := h.program(netA, epID(1), "::80/tcp"); err != nil {
		t.Fatal(err)
	}
	if err := h.program(netA, epID(2), "::80/tcp"); err != nil {
		t.Fatal(err)
	}
	if got, want := h.storedPorts(t, epID(1)), []string{"0.0.0.0:40009->80/tcp", "[::]:40009->80/tcp"}; !slices.Equal(got, want) {
		t.Errorf("first endpoint got %q, want %q (40008 is half taken)", got, want)
	}
	if got, want := h.storedPorts(t, epID(2)), []string{"0.0.0.0:40000->80/tcp", "[::]:40000->80/tcp"}; !slices.Equal(got, want) {
		t.Errorf("second endpoint got %q, want %q (round robin wraps)", got, want)
	}
	if h.res.held["tcp 0.0.0.0:40008"] != (portproxy.Mapping{}) {
		t.Errorf("the IPv4 half of the refused 40008 is still held")
	}
	// The whole range taken.
	for p := 40000; p <= 40009; p++ {
		h.res.busy[fmt.Sprintf("tcp 0.0.0.0:%d", p)] = true
	}
	h.endpoint(t, netA, epID(3), "10.10.0.4/24")
	err := h.program(netA, epID(3), "::80/tcp")
	if err == nil || !strings.Contains(err.Error(), "port is already allocated") || !strings.Contains(err.Error(), "40000-40009") {
		t.Errorf("full range: err = %v", err)
	}
}

func TestConflictingPortRefusedAndNothingLeft(t *testing.T) {
	h := newPortsHarness(t)
	mustCreate(t, h.harness, createReq(netB, "10.20.0.0/24", "10.20.0.1/24", nil))
	h.endpoint(t, netB, epID(2), "10.20.0.2/24")
	if err := h.program(netA, epID(1), ":8080:80/tcp", "192.0.2.1:9090:90/udp"); err != nil {
		t.Fatal(err)
	}
	held := h.res.keys()
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
		h.res.busy["tcp [::]:6060"] = true
		err := h.program(netB, epID(2), c.specs...)
		if err == nil || !strings.Contains(err.Error(), "port is already allocated") || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%q: err = %v, want a refusal naming %q", c.specs, err, c.why)
		}
		if got := h.res.keys(); !slices.Equal(got, held) {
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

func TestRangePicksFirstFreePort(t *testing.T) {
	h := newPortsHarness(t)
	h.res.busy["tcp 0.0.0.0:9000"] = true
	if err := h.program(netA, epID(1), ":9000-9002:80/tcp"); err != nil {
		t.Fatal(err)
	}
	if got := h.storedPorts(t, epID(1)); !slices.Equal(got, []string{"0.0.0.0:9001->80/tcp", "[::]:9001->80/tcp"}) {
		t.Errorf("stored %q", got)
	}
}

func TestProgramReplayKeepsPortsAndChangeReplaces(t *testing.T) {
	h := newPortsHarness(t)
	if err := h.program(netA, epID(1), "::80/tcp", ":8080:81/tcp"); err != nil {
		t.Fatal(err)
	}
	first := h.storedPorts(t, epID(1))
	reserves := h.res.reserves
	if err := h.program(netA, epID(1), "::80/tcp", ":8080:81/tcp"); err != nil {
		t.Fatal(err)
	}
	if got := h.storedPorts(t, epID(1)); !slices.Equal(got, first) || len(h.fw.Removed) != 0 {
		t.Errorf("replay changed the ports: %q -> %q, removed %v", first, got, h.fw.Removed)
	}
	if h.res.reserves != reserves+len(first) {
		t.Errorf("replay reserved %d times, want %d (each held port once, idempotently)", h.res.reserves-reserves, len(first))
	}
	if err := h.program(netA, epID(1), ":8081:81/tcp"); err != nil {
		t.Fatal(err)
	}
	if got := h.storedPorts(t, epID(1)); !slices.Equal(got, []string{"0.0.0.0:8081->81/tcp", "[::]:8081->81/tcp"}) {
		t.Errorf("after a different portmap: %q", got)
	}
	if got := h.res.keys(); !slices.Equal(got, []string{"tcp 0.0.0.0:8081", "tcp [::]:8081"}) {
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
	if len(h.res.keys()) != 0 || len(h.fw.Ports) != 0 || len(h.fw.Removed) != 2 {
		t.Errorf("left: held %q, rules %v", h.res.keys(), h.fw.Ports)
	}
}

func TestPublishRollsBackOnFailure(t *testing.T) {
	h := newPortsHarness(t)
	h.fw.FailPorts = errors.New("iptables-restore refused")
	if err := h.program(netA, epID(1), ":8080:80/tcp"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("err = %v, want the firewall's", err)
	}
	if len(h.res.keys()) != 0 || len(h.storedPorts(t, epID(1))) != 0 {
		t.Errorf("left: held %q, stored %q", h.res.keys(), h.storedPorts(t, epID(1)))
	}
	h.fw.FailPorts = nil
	h.st.failSaveEndpoint = true
	if err := h.program(netA, epID(1), ":8080:80/tcp"); !errors.Is(err, errDisk) {
		t.Errorf("err = %v, want the store's", err)
	}
	if len(h.res.keys()) != 0 || len(h.fw.Ports) != 0 {
		t.Errorf("left: held %q, rules %v", h.res.keys(), h.fw.Ports)
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
		Options: map[string]interface{}{keyPortMap: "junk"}})
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
	h.res.held = map[string]portproxy.Mapping{}
	h.fw.Ports = nil
	orphan := store.Endpoint{ID: epID(5), NetworkID: netB, HostVeth: "vxh5", MAC: "02:00:00:00:00:05",
		Ports: []store.PortMapping{{Proto: "tcp", HostIP: netip.IPv4Unspecified(), HostPort: 9999, ContainerIP: netip.MustParseAddr("10.20.0.5"), ContainerPort: 80}}}
	if err := h.st.SaveEndpoint(&orphan); err != nil {
		t.Fatal(err)
	}
	h.res.busy["tcp [::]:8080"] = true // taken while vxbridge was down
	_, err := h.d.Reconcile()
	if err == nil || !strings.Contains(err.Error(), "[::]:8080") {
		t.Errorf("Reconcile = %v, want it to report the port it could not hold", err)
	}
	if got := h.res.keys(); !slices.Equal(got, []string{"tcp 0.0.0.0:8080"}) {
		t.Errorf("held after reconcile: %q", got)
	}
	if p, ok := h.fw.Ports[epID(1)]; !ok || len(p.Mappings) != 2 || len(h.fw.Ports) != 1 {
		t.Errorf("firewall ports after reconcile: %v", h.fw.Ports)
	}
}
