package metrics

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/vxbridge/vxbridge/status"
)

func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, rec.Body)
	}
	return fams
}

func get(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	t.Helper()
	for _, m := range fams[name].GetMetric() {
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			ok = ok && found
		}
		if ok {
			return m
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return nil
}

func TestScrape(t *testing.T) {
	rep := &status.Report{
		Networks:  []status.Network{{ID: "n1", Health: status.Healthy()}, {ID: "n2", Health: status.Unhealthy("gone")}},
		Endpoints: []status.Endpoint{{ID: "e1", Health: status.Healthy()}},
	}
	m := New("v9")
	m.WatchState(func() (*status.Report, error) { return rep, nil })
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ { // concurrent calls, as the plugin's handler makes them
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.ObserveCall("NetworkDriver.Join", 3*time.Millisecond, nil)
			m.ObserveCall("IpamDriver.RequestPool", time.Millisecond, errors.New("overlap"))
		}()
	}
	wg.Wait()
	m.ObserveReconcile(nil)
	m.ObserveReconcile(errors.New("iptables"))

	f := scrape(t, m)
	if h := get(t, f, "vxbridge_api_call_duration_seconds", "call", "NetworkDriver.Join").GetHistogram(); h.GetSampleCount() != 8 ||
		h.GetSampleSum() < 0.023 || h.GetSampleSum() > 0.025 {
		t.Errorf("Join histogram: count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"vxbridge_api_call_errors_total", []string{"call", "IpamDriver.RequestPool"}, 8},
		{"vxbridge_api_call_errors_total", []string{"call", "NetworkDriver.Join"}, 0},
		{"vxbridge_reconcile_runs_total", nil, 2},
		{"vxbridge_reconcile_errors_total", nil, 1},
		{"vxbridge_networks", nil, 2},
		{"vxbridge_endpoints", nil, 1},
		{"vxbridge_unhealthy", []string{"kind", "network"}, 1},
		{"vxbridge_unhealthy", []string{"kind", "endpoint"}, 0},
		{"vxbridge_cluster_enabled", nil, 0},
		{"vxbridge_vxlan_peers", nil, 0},
		{"vxbridge_build_info", []string{"version", "v9"}, 1},
	}
	for _, c := range checks {
		m := get(t, f, c.name, c.labels...)
		got := m.GetGauge().GetValue() + m.GetCounter().GetValue()
		if got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := f["vxbridge_etcd_connected"]; ok {
		t.Error("single-host exports vxbridge_etcd_connected")
	}

	rep.Cluster = &status.Cluster{Etcd: status.Etcd{Connected: true}, Peers: []status.Peer{{Health: status.Healthy()}, {}},
		FDBEntries: 5, NeighborEntries: 6, LostBlocks: []status.LostBlock{{Pool: "10.90.0.0/24", Block: "10.90.0.64/26", HeldBy: "h2"}}}
	f = scrape(t, m)
	for name, want := range map[string]float64{"vxbridge_cluster_enabled": 1, "vxbridge_vxlan_peers": 2,
		"vxbridge_fdb_entries": 5, "vxbridge_neighbor_entries": 6, "vxbridge_etcd_connected": 1, "vxbridge_ipam_lost_blocks": 1} {
		if got := get(t, f, name).GetGauge().GetValue(); got != want {
			t.Errorf("cluster: %s = %v, want %v", name, got, want)
		}
	}
	if got := get(t, f, "vxbridge_unhealthy", "kind", "peer").GetGauge().GetValue(); got != 1 {
		t.Errorf("unhealthy peers = %v", got)
	}

	rep.Cluster.Names = []status.Name{{Network: "90", Name: "web.xnet", Addresses: []string{"10.90.0.5"}}}
	rep.Cluster.DNS = &status.DNSStats{Port: 5335, Answered: 3, Forwarded: 4, Failed: 1}
	f = scrape(t, m)
	if got := get(t, f, "vxbridge_dns_names").GetGauge().GetValue(); got != 1 {
		t.Errorf("vxbridge_dns_names = %v, want 1", got)
	}
	for result, want := range map[string]float64{"answered": 3, "forwarded": 4, "failed": 1, "dropped": 0} {
		if got := get(t, f, "vxbridge_dns_queries_total", "result", result).GetCounter().GetValue(); got != want {
			t.Errorf("vxbridge_dns_queries_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}

func TestScrapeSnapshotFails(t *testing.T) {
	m := New("v")
	m.WatchState(func() (*status.Report, error) { return nil, errors.New("store closed") })
	m.ObserveCall("NetworkDriver.Join", time.Millisecond, nil)
	// The other metrics still come out.
	f := scrape(t, m)
	if _, ok := f["vxbridge_api_call_duration_seconds"]; !ok {
		t.Error("a failing snapshot hid the call metrics")
	}
	if _, ok := f["vxbridge_networks"]; ok {
		t.Error("vxbridge_networks exported without a snapshot")
	}
}

func TestListenTaken(t *testing.T) {
	l, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := Listen(l.Addr().String()); err == nil || !strings.Contains(err.Error(), "--metrics-listen") {
		t.Errorf("second Listen on %s: %v", l.Addr(), err)
	}
}

// Scrapes within snapshotMaxAge share one status snapshot, however many
// come at once: a flood of scrapes costs at most one a second (checked:
// with Collect taking a snapshot per scrape, 50 scrapes took 50).
func TestScrapesShareASnapshot(t *testing.T) {
	m := New("v")
	var mu sync.Mutex
	taken := 0
	m.WatchState(func() (*status.Report, error) {
		mu.Lock()
		defer mu.Unlock()
		taken++
		return &status.Report{}, nil
	})
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() { defer wg.Done(); scrape(t, m) }()
	}
	wg.Wait()
	if taken != 1 {
		t.Errorf("50 scrapes at once took %d snapshots, want 1", taken)
	}
	time.Sleep(snapshotMaxAge)
	scrape(t, m)
	if taken != 2 {
		t.Errorf("a scrape after %v took no new snapshot (%d in all)", snapshotMaxAge, taken)
	}
}
