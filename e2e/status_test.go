package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/doctor"
	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/ownership/mark"
	"github.com/vxbridge/vxbridge/status"
)

// metricsAddr is where the tests' plugins serve /metrics: the loopback of
// the host's own network namespace, so a fixed port cannot collide.
const metricsAddr = "127.0.0.1:9464"

// TestStatusDoctorMetrics runs an unmanaged plugin with metrics on and
// checks `vxbridge status`, `vxbridge doctor` and /metrics against what the
// test built, then breaks things and checks each tool reports it.
func TestStatusDoctorMetrics(t *testing.T) {
	requirePlugin(t)
	h := testbed.NewHost(t, testbed.HostOptions{Name: "st"})
	h.ImportImage(t)
	// No periodic reconcile: the breakage below must stay until the tools see it.
	h.StartPlugin(t, pluginBin, "--reconcile-interval", "0", "--metrics-listen", metricsAddr)
	createNetwork(t, h, "vxstat", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.81.0.0/24")
	runContainer(t, h, "sa", "vxstat")
	runContainer(t, h, "sb", "vxstat")
	mustPing(t, h, "sa", "sb")
	netID := strings.TrimSpace(h.MustDocker(t, "network", "inspect", "-f", "{{.Id}}", "vxstat"))

	// status, the socket found under /run/docker/plugins as an operator's shell sees it.
	rep := statusJSON(t, h, "")
	if len(rep.Networks) != 1 || rep.Networks[0].ID != netID || len(rep.Endpoints) != 2 {
		t.Fatalf("status: want network %s with 2 endpoints, got %+v", netID, rep)
	}
	if p := rep.Problems(); len(p) > 0 || rep.Cluster != nil {
		t.Errorf("status: want all healthy and single-host, got problems %q, cluster %+v", p, rep.Cluster)
	}
	if want := dockerBackend(t, h); rep.Firewall.Backend != want {
		t.Errorf("status: firewall backend %q (%s), docker's chains are in %q", rep.Firewall.Backend, rep.Firewall.Reason, want)
	}
	table := runCLI(t, h, true, "status", "--socket", h.PluginSocket())
	for _, want := range []string{"NETWORKS (1)", rep.Networks[0].Bridge, "10.81.0.0/24", "ENDPOINTS (2)",
		"VXLAN PEERS  " + status.NotApplicable, "all healthy"} {
		if !strings.Contains(table, want) {
			t.Errorf("status table lacks %q:\n%s", want, table)
		}
	}

	findings := doctorJSON(t, h, false)
	for _, check := range []string{"plugin", "state", "forward", "leftovers"} {
		if f := finding(t, findings, check); f.Level != doctor.OK {
			t.Errorf("doctor %s: want ok, got %+v", check, f)
		}
	}
	if f := finding(t, findings, "etcd"); f.Level != doctor.Skip || f.Message != status.NotApplicable {
		t.Errorf("doctor etcd: want skip %q, got %+v", status.NotApplicable, f)
	}

	// A request docker would never send, to count an error.
	if code, _, err := testbed.PluginCall(h.PluginSocket(), "/NetworkDriver.CreateNetwork", "{bad json"); err != nil || code != http.StatusBadRequest {
		t.Fatalf("bad request: HTTP %d, %v", code, err)
	}
	m := scrape(t, h)
	wantGauge(t, m, "vxbridge_networks", nil, 1)
	wantGauge(t, m, "vxbridge_endpoints", nil, 2)
	wantGauge(t, m, "vxbridge_cluster_enabled", nil, 0)
	wantGauge(t, m, "vxbridge_unhealthy", map[string]string{"kind": "endpoint"}, 0)
	if n := histogramCount(t, m, "vxbridge_api_call_duration_seconds", "NetworkDriver.CreateEndpoint"); n < 2 {
		t.Errorf("CreateEndpoint observed %d times, want >= 2", n)
	}
	wantCounter(t, m, "vxbridge_api_call_errors_total", map[string]string{"call": "NetworkDriver.CreateNetwork"}, 1)
	if v := value(t, m, "vxbridge_reconcile_runs_total", nil); v < 1 {
		t.Errorf("vxbridge_reconcile_runs_total = %v, want >= 1 (the start-up run)", v)
	}

	// Break three things the plugin does not repair at once: a veth off its
	// bridge, forwarding off, a leftover link (a veth: a new bridge would
	// make the plugin re-check the firewall). Firewall damage is not used:
	// the plugin's nf_tables watch repairs it within milliseconds, so the
	// forward check's failures are proven by doctor's unit tests.
	veth := rep.Endpoints[0].HostVeth
	h.Exec(t, "ip", "link", "set", veth, "nomaster")
	h.Exec(t, "sysctl", "-w", "net.ipv4.ip_forward=0")
	t.Cleanup(func() { h.TryExec("sysctl", "-w", "net.ipv4.ip_forward=1") })
	h.Exec(t, "ip", "link", "add", "vxb-left", "type", "veth", "peer", "name", "vxb-left-p")
	h.Exec(t, "ip", "link", "set", "vxb-left", "alias", ownMark(t, h, mark.Net, "0123456789abcdef"))

	rep = statusJSON(t, h, h.PluginSocket())
	if p := rep.Problems(); len(p) != 1 || !strings.Contains(p[0], veth) {
		t.Errorf("status after unplugging %s: want one problem naming it, got %q", veth, p)
	}
	if table := runCLI(t, h, true, "status", "--socket", h.PluginSocket()); !strings.Contains(table, "1 PROBLEM(S)") {
		t.Errorf("status table does not report the problem:\n%s", table)
	}
	// Scrapes share a snapshot up to a second old: the one above may have
	// been read before the veth left its bridge.
	testbed.WaitFor(t, 3*time.Second, func() error {
		if got := value(t, scrape(t, h), "vxbridge_unhealthy", map[string]string{"kind": "endpoint"}); got != 1 {
			return fmt.Errorf("vxbridge_unhealthy{kind=endpoint} = %v, want 1", got)
		}
		return nil
	})

	findings = doctorJSON(t, h, true)
	if f := finding(t, findings, "ip_forward"); f.Level != doctor.Fail || !strings.Contains(f.Fix, "ip_forward=1") {
		t.Errorf("doctor ip_forward: want FAIL with a fix; got %+v", f)
	}
	if f := finding(t, findings, "leftovers"); f.Level != doctor.Warn || !strings.Contains(f.Message, "vxb-left") {
		t.Errorf("doctor leftovers: want warn naming vxb-left, got %+v", f)
	}
	if f := finding(t, findings, "state"); f.Level != doctor.Warn || !strings.Contains(f.Message, veth) {
		t.Errorf("doctor state: want warn naming %s, got %+v", veth, f)
	}
	h.Exec(t, "ip", "link", "del", "vxb-left")
}

// dockerBackend is the iptables backend holding docker's chains in h.
func dockerBackend(t *testing.T, h *testbed.Host) string {
	t.Helper()
	if out, err := h.TryExec("iptables-nft-save"); err == nil && strings.Contains(out, ":DOCKER-USER") {
		return "nft"
	}
	if out, err := h.TryExec("iptables-legacy-save"); err == nil && strings.Contains(out, ":DOCKER-USER") {
		return "legacy"
	}
	t.Fatal("docker's chains are in neither iptables backend")
	return ""
}

var cliRuns atomic.Int32

// runCLI runs `vxbridge ARGS...` inside h: its network namespace and a mount
// namespace where /run/docker/plugins is h's plugins folder, as a shell on
// that host would. It returns stdout+stderr; wantOK fails the test on a
// non-zero exit, !wantOK on a zero one.
func runCLI(t *testing.T, h *testbed.Host, wantOK bool, args ...string) string {
	t.Helper()
	name := fmt.Sprintf("cli-%d.log", cliRuns.Add(1))
	p := h.Start(t, name, append([]string{pluginBin}, args...)...)
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("vxbridge %s still running after 30s", strings.Join(args, " "))
	}
	out := p.Log()
	// The testbed heads the log with a "=== testbed: starting" line.
	if _, rest, ok := strings.Cut(out, "\n"); ok && strings.HasPrefix(out, "=== testbed") {
		out = rest
	}
	if err := p.ExitErr(); (err == nil) != wantOK {
		t.Fatalf("vxbridge %s: exit %v, want success %v:\n%s", strings.Join(args, " "), err, wantOK, out)
	}
	return out
}

// statusJSON runs `vxbridge status --json`, finding the socket itself when
// socket is "".
func statusJSON(t *testing.T, h *testbed.Host, socket string) *status.Report {
	t.Helper()
	args := []string{"status", "--json"}
	if socket != "" {
		args = append(args, "--socket", socket)
	}
	out := runCLI(t, h, true, args...)
	rep, err := status.Decode([]byte(out))
	if err != nil {
		t.Fatalf("vxbridge status --json: %v\n%s", err, out)
	}
	return rep
}

// ownMark is the alias a link of kind for record id carries when the
// running plugin of h makes it: the marks carry its state file's identity.
func ownMark(t *testing.T, h *testbed.Host, kind, id string) string {
	t.Helper()
	rep := statusJSON(t, h, h.PluginSocket())
	if rep.Ownership == nil {
		t.Fatal("the plugin's status says nothing of its state file's identity")
	}
	return mark.Alias(rep.Ownership.Identity, kind, id)
}

func doctorJSON(t *testing.T, h *testbed.Host, wantFail bool) []doctor.Finding {
	t.Helper()
	out := runCLI(t, h, !wantFail, "doctor", "--json")
	// On failure the last line is the error; the JSON comes first.
	dec := json.NewDecoder(strings.NewReader(out))
	var fs []doctor.Finding
	if err := dec.Decode(&fs); err != nil {
		t.Fatalf("vxbridge doctor --json: %v\n%s", err, out)
	}
	return fs
}

func finding(t *testing.T, fs []doctor.Finding, check string) doctor.Finding {
	t.Helper()
	for _, f := range fs {
		if f.Check == check {
			return f
		}
	}
	t.Fatalf("doctor has no %q check: %+v", check, fs)
	return doctor.Finding{}
}

// scrape GETs /metrics from inside h's network namespace and parses it.
func scrape(t *testing.T, h *testbed.Host) map[string]*dto.MetricFamily {
	t.Helper()
	var body []byte
	err := testbed.Poll(10*time.Second, func() error {
		var err error
		body, err = getInNetNS(h.NetNS().Path(), "http://"+metricsAddr+"/metrics")
		return err
	})
	if err != nil {
		t.Fatalf("scrape %s: %v", metricsAddr, err)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

// getInNetNS does an HTTP GET whose socket is made in the namespace at
// nsPath (a socket stays in the namespace it was created in).
func getInNetNS(nsPath, url string) ([]byte, error) {
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			return nil, err
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			return nil, err
		}
		defer netns.Set(orig)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// value is the value of the sample of family name whose labels include
// labels; the test fails when there is none.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	fam, ok := fams[name]
	if !ok {
		t.Fatalf("/metrics has no %s", name)
	}
	for _, m := range fam.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		}
	}
	t.Fatalf("/metrics has no %s%v sample", name, labels)
	return 0
}

func wantGauge(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string, want float64) {
	t.Helper()
	if fams[name].GetType() != dto.MetricType_GAUGE {
		t.Errorf("%s is a %v, want a gauge", name, fams[name].GetType())
	}
	if got := value(t, fams, name, labels); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

func wantCounter(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string, want float64) {
	t.Helper()
	if fams[name].GetType() != dto.MetricType_COUNTER {
		t.Errorf("%s is a %v, want a counter", name, fams[name].GetType())
	}
	if got := value(t, fams, name, labels); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

func histogramCount(t *testing.T, fams map[string]*dto.MetricFamily, name, call string) uint64 {
	t.Helper()
	for _, m := range fams[name].GetMetric() {
		if hasLabels(m, map[string]string{"call": call}) && m.Histogram != nil {
			return m.Histogram.GetSampleCount()
		}
	}
	t.Fatalf("/metrics has no %s{call=%q} histogram", name, call)
	return 0
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// pluginSockets lists the managed plugins' sockets of h (one folder per
// plugin id under its plugins folder).
func pluginSockets(h *testbed.Host) []string {
	m, _ := filepath.Glob(filepath.Join(h.PluginsDir(), "*", status.SocketName))
	return m
}
