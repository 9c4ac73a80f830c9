package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/namespace"
)

// simEtcd is etcd for figure 6, in the underlay namespace: one member, or
// three on the same address with their own ports. Its data lives under
// dataRoot (tmpfs by default: the simulation measures the design, not this
// machine's disk).
type simEtcd struct {
	ns      *testbed.NetNS
	members []*etcdMember
	http    *http.Client // dials inside the underlay namespace
}

type etcdMember struct {
	name, client string
	args         []string
	proc         *testbed.Process
	log          string
}

// startEtcd starts n members (1 or 3) on ip and waits until they are healthy.
func startEtcd(t testing.TB, ns *testbed.NetNS, ip string, n int, dataRoot string) *simEtcd {
	t.Helper()
	dir, err := os.MkdirTemp(dataRoot, "vxbench-etcd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &simEtcd{ns: ns, http: nsHTTPClient(t, ns.Path())}
	var cluster []string
	for i := range n {
		port := 2379 + 10000*i
		m := &etcdMember{name: fmt.Sprintf("m%d", i), client: fmt.Sprintf("http://%s:%d", ip, port),
			log: filepath.Join(dir, fmt.Sprintf("m%d.log", i))}
		peer := fmt.Sprintf("http://127.0.0.1:%d", port+1)
		cluster = append(cluster, m.name+"="+peer)
		m.args = []string{"etcd", "--name", m.name, "--data-dir", filepath.Join(dir, m.name),
			"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--log-level", "warn"}
		e.members = append(e.members, m)
	}
	for _, m := range e.members {
		m.args = append(m.args, "--initial-cluster", strings.Join(cluster, ","))
	}
	e.start(t)
	// Before the namespace's own 10 s stop: an etcd that fell behind takes
	// longer to shut down.
	t.Cleanup(func() { e.stop(t) })
	return e
}

// URLs is every member's client URL, comma-separated.
func (e *simEtcd) URLs() string {
	var u []string
	for _, m := range e.members {
		u = append(u, m.client)
	}
	return strings.Join(u, ",")
}

func (e *simEtcd) start(t testing.TB) {
	t.Helper()
	for _, m := range e.members {
		m.proc = e.ns.Start(t, m.log, m.args...)
	}
	if err := e.waitHealthy(60 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// etcdStopGrace is how long a member may take to stop on SIGTERM.
const etcdStopGrace = time.Minute

// stop stops every member (SIGTERM; SIGKILL after etcdStopGrace, logged),
// keeping their data.
func (e *simEtcd) stop(t testing.TB) {
	t.Helper()
	for _, m := range e.members {
		if err := m.proc.StopTimeout(etcdStopGrace); err != nil {
			t.Logf("etcd %s: %v", m.name, err)
		}
	}
}

func (e *simEtcd) waitHealthy(wait time.Duration) error {
	return testbed.Poll(wait, func() error {
		for _, m := range e.members {
			if m.proc.Exited() {
				return testbed.Permanent(fmt.Errorf("etcd %s exited: %v\n%s", m.name, m.proc.ExitErr(), lastLines(m.proc.Log(), 20)))
			}
			body, err := e.get(m.client + "/health")
			if err != nil || !strings.Contains(body, `"true"`) {
				return fmt.Errorf("etcd %s not healthy: %v %s", m.name, err, body)
			}
		}
		return nil
	})
}

func (e *simEtcd) get(url string) (string, error) {
	resp, err := e.http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// post sends a JSON request to etcd's gRPC gateway (/v3/...).
func (e *simEtcd) post(path string, req, resp any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	r, err := e.http.Post(e.members[0].client+path, "application/json", strings.NewReader(string(b)))
	if err != nil {
		return fmt.Errorf("etcd %s: %w", path, err)
	}
	defer r.Body.Close()
	body, err := io.ReadAll(r.Body)
	if err != nil || r.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: HTTP %d: %v %s", path, r.StatusCode, err, body)
	}
	return json.Unmarshal(body, resp)
}

// compact compacts etcd's history up to its current revision and returns it.
func (e *simEtcd) compact() (int64, error) {
	var rng struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	if err := e.post("/v3/kv/range", map[string]string{"key": "AA=="}, &rng); err != nil {
		return 0, err
	}
	rev, err := strconv.ParseInt(rng.Header.Revision, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("etcd revision %q: %w", rng.Header.Revision, err)
	}
	var out map[string]any
	return rev, e.post("/v3/kv/compaction", map[string]any{"revision": strconv.FormatInt(rev, 10), "physical": true}, &out)
}

// etcdSample is etcd's counters at one moment, all members summed.
type etcdSample struct {
	at                               time.Time
	events, sent                     float64
	watchers, streams, keys, dbBytes float64
	cpu, wait                        time.Duration
	rssKiB, fds                      int
}

// etcdMetrics are the /metrics samples read, summed over label sets
// (etcd 3.4 names).
var etcdMetrics = []string{"etcd_debugging_mvcc_events_total", "etcd_network_client_grpc_sent_bytes_total",
	"etcd_debugging_mvcc_watcher_total", "etcd_debugging_mvcc_watch_stream_total", "etcd_debugging_mvcc_keys_total",
	"etcd_mvcc_db_total_size_in_bytes"}

func (e *simEtcd) sample() (etcdSample, error) {
	s := etcdSample{at: time.Now()}
	for _, m := range e.members {
		body, err := e.get(m.client + "/metrics")
		if err != nil {
			return s, fmt.Errorf("etcd %s metrics: %w", m.name, err)
		}
		v := metricSums(body, etcdMetrics)
		s.events += v[etcdMetrics[0]]
		s.sent += v[etcdMetrics[1]]
		s.watchers += v[etcdMetrics[2]]
		s.streams += v[etcdMetrics[3]]
		s.keys = max(s.keys, v[etcdMetrics[4]])
		s.dbBytes = max(s.dbBytes, v[etcdMetrics[5]])
		st, err := readProcStat(m.proc.Pid())
		if err != nil {
			return s, err
		}
		s.cpu += st.cpu
		s.wait += st.wait
		s.rssKiB += st.rssKiB
		s.fds += st.fds
	}
	return s, nil
}

// metricSums sums, per wanted name, the samples of Prometheus text output
// ("name{labels} value") whose metric name is exactly that name.
func metricSums(text string, names []string) map[string]float64 {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		end := strings.IndexAny(line, "{ ")
		if end <= 0 || line[0] == '#' || !want[line[:end]] {
			continue
		}
		rest := line[end:]
		if rest[0] == '{' {
			rest = rest[strings.LastIndexByte(rest, '}')+1:]
		}
		if f := strings.Fields(rest); len(f) > 0 {
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				out[line[:end]] += v
			}
		}
	}
	return out
}

// nsHTTPClient is an HTTP client whose connections are made inside the
// network namespace at nsPath (etcd listens in the underlay namespace; the
// harness runs in the machine's).
func nsHTTPClient(t testing.TB, nsPath string) *http.Client {
	t.Helper()
	h, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := namespace.Do(h, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 4}}
}
