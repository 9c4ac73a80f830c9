package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/bench/sim"
	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// simProc is a running bench/simhosts, in the underlay namespace with etcd.
type simProc struct {
	proc    *testbed.Process
	ctl     *http.Client
	records string
}

// simArgs is what the harness tells simhosts.
type simArgs struct {
	bin       string
	etcd      string
	plan      sim.Plan
	watchers  int
	policy    string
	seed      uint64
	ttl       time.Duration
	logLevel  string
	dir       string // for the socket, the records and the log
	observers int
}

func startSimhosts(t testing.TB, ns *testbed.NetNS, a simArgs) *simProc {
	t.Helper()
	sock := filepath.Join(a.dir, "simhosts.sock")
	s := &simProc{records: filepath.Join(a.dir, "records.jsonl")}
	s.proc = ns.Start(t, filepath.Join(a.dir, "simhosts.log"), a.bin, "-etcd", a.etcd,
		"-hosts", fmt.Sprint(a.plan.Hosts), "-endpoints", fmt.Sprint(a.plan.PerHost), "-shape", a.plan.Shape.String(),
		"-observers", fmt.Sprint(a.plan.Observers), "-control", sock, "-records", s.records,
		"-watchers", fmt.Sprint(a.watchers), "-stop", a.policy, "-seed", fmt.Sprint(a.seed),
		"-ttl", a.ttl.String(), "-log-level", a.logLevel)
	s.ctl = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}, Timeout: 15 * time.Minute}
	return s
}

func (s *simProc) call(method, path string, req, resp any) error {
	var body io.Reader
	if req != nil {
		b, err := json.Marshal(req)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	r, err := http.NewRequest(method, "http://simhosts"+path, body)
	if err != nil {
		return err
	}
	res, err := s.ctl.Do(r)
	if err != nil {
		return fmt.Errorf("simhosts %s: %w", path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		return fmt.Errorf("simhosts %s: HTTP %d: %v %s", path, res.StatusCode, err, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, resp)
}

func (s *simProc) status() (sim.Status, error) {
	var st sim.Status
	return st, s.call(http.MethodGet, "/status", nil, &st)
}

func (s *simProc) churn(req sim.ChurnRequest) (sim.ChurnResult, error) {
	var res sim.ChurnResult
	return res, s.call(http.MethodPost, "/churn", req, &res)
}

func (s *simProc) add(req sim.AddRequest) (sim.AddResult, error) {
	var res sim.AddResult
	return res, s.call(http.MethodPost, "/add", req, &res)
}

// waitReady waits until every host is up and every write is in etcd. A
// host that failed ends the wait with its error.
func (s *simProc) waitReady(wait time.Duration) (sim.Status, error) {
	var st sim.Status
	err := testbed.Poll(wait, func() error {
		if s.proc.Exited() {
			return testbed.Permanent(fmt.Errorf("simhosts exited: %v\n%s", s.proc.ExitErr(), lastLines(s.proc.Log(), 20)))
		}
		var err error
		if st, err = s.status(); err != nil {
			return err
		}
		if st.Errors > 0 {
			return testbed.Permanent(fmt.Errorf("%d synthetic hosts failed; last: %s", st.Errors, st.LastError))
		}
		if st.Ready < st.Hosts || st.Pending > 0 {
			return fmt.Errorf("%d of %d synthetic hosts ready, %d writes pending", st.Ready, st.Hosts, st.Pending)
		}
		return nil
	})
	return st, err
}

// readRecords returns the records with tag.
func (s *simProc) readRecords(tag string) ([]sim.Record, error) {
	f, err := os.Open(s.records)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []sim.Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r sim.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("records %s: %w", s.records, err)
		}
		if r.Tag == tag {
			out = append(out, r)
		}
	}
	return out, sc.Err()
}
