package plugin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/internal/server"
	"github.com/vxbridge/vxbridge/internal/testutil/fakes"
	vxipam "github.com/vxbridge/vxbridge/ipam"
	"github.com/vxbridge/vxbridge/store"
)

// hostileRig is the real driver and IPAM over a real store (kernel rooms
// faked), served by the real unix-socket server with its timeouts, and a
// recorder of handler panics (net/http would otherwise swallow them).
type hostileRig struct {
	db     *store.DB
	links  *fakes.Links
	fw     *fakes.Firewall
	socket string
	client *http.Client

	mu     sync.Mutex
	panics []string
}

func newHostileRig(t *testing.T) *hostileRig { return newHostileRigTimeouts(t, nil) }

// newHostileRigTimeouts serves with the given timeouts (nil: the server's
// defaults).
func newHostileRigTimeouts(t *testing.T, timeouts *server.Timeouts) *hostileRig {
	t.Helper()
	db, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := &hostileRig{db: db, links: fakes.NewLinks(), fw: fakes.NewFirewall()}
	drv := driver.New(driver.Config{Store: db, Links: r.links, Firewall: r.fw})
	ip, err := vxipam.New(db, vxipam.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := New(drv, ip, nil)
	guarded := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				r.mu.Lock()
				r.panics = append(r.panics, fmt.Sprintf("%s: %v", req.URL.Path, p))
				r.mu.Unlock()
				w.WriteHeader(http.StatusInternalServerError)
			}
		}()
		h.ServeHTTP(w, req)
	})
	dir, err := os.MkdirTemp("", "vxhostile-") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r.socket = filepath.Join(dir, "p.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- server.ServeUnix(ctx, server.Options{Path: r.socket, Handler: guarded, Logger: slog.New(slog.DiscardHandler), Timeouts: timeouts})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	r.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", r.socket)
		},
	}}
	t.Cleanup(r.client.CloseIdleConnections)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, _, err := r.call("POST", "/Plugin.Activate", ""); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("server not up: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r
}

func (r *hostileRig) call(method, path, body string) (int, string, error) {
	req, err := http.NewRequest(method, "http://plugin"+path, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// mustCall makes a legitimate call that must succeed (HTTP 200, no error field).
func (r *hostileRig) mustCall(t *testing.T, path, body string) map[string]any {
	t.Helper()
	code, out, err := r.call("POST", path, body)
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s: HTTP %d %v: %s", path, code, err, out)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("%s: reply %q: %v", path, out, err)
	}
	if m["Err"] != nil && m["Err"] != "" {
		t.Fatalf("%s: %v", path, m["Err"])
	}
	return m
}

// state renders every store record and the fake kernel, for before/after.
func (r *hostileRig) state(t *testing.T) string {
	t.Helper()
	nets, err1 := r.db.Networks()
	eps, err2 := r.db.Endpoints()
	pools, err3 := r.db.Pools()
	if err := errorsJoin(err1, err2, err3); err != nil {
		t.Fatal(err)
	}
	addrs := map[string]map[string]store.AddressKind{}
	for _, p := range pools {
		a, err := r.db.Addresses(p.ID)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]store.AddressKind{}
		for k, v := range a {
			m[k.String()] = v
		}
		addrs[p.ID] = m
	}
	b, err := json.MarshalIndent(map[string]any{"networks": nets, "endpoints": eps, "pools": pools, "addresses": addrs}, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\nlinks:\n" + r.links.Snapshot() + "\nfirewall:\n" + r.fw.Snapshot()
}

func errorsJoin(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

const (
	hostileNet = "aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111"
	hostileEp  = "bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222"
)

// populate makes one pool, network and joined endpoint through the API, so
// hostile calls have real state to damage.
func (r *hostileRig) populate(t *testing.T) {
	t.Helper()
	pool := r.mustCall(t, "/IpamDriver.RequestPool", `{"AddressSpace":"vxbridge-local","Pool":"10.66.0.0/24"}`)
	poolID, _ := pool["PoolID"].(string)
	r.mustCall(t, "/IpamDriver.RequestAddress", fmt.Sprintf(`{"PoolID":%q,"Address":"10.66.0.1","Options":{"RequestAddressType":"com.docker.network.gateway"}}`, poolID))
	r.mustCall(t, "/NetworkDriver.CreateNetwork", fmt.Sprintf(`{"NetworkID":%q,"Options":{"com.docker.network.generic":{}},"IPv4Data":[{"AddressSpace":"vxbridge-local","Pool":"10.66.0.0/24","Gateway":"10.66.0.1/24"}]}`, hostileNet))
	addr := r.mustCall(t, "/IpamDriver.RequestAddress", fmt.Sprintf(`{"PoolID":%q}`, poolID))
	r.mustCall(t, "/NetworkDriver.CreateEndpoint", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q,"Interface":{"Address":%q}}`, hostileNet, hostileEp, addr["Address"]))
	r.mustCall(t, "/NetworkDriver.Join", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q,"SandboxKey":"/var/run/docker/netns/x"}`, hostileNet, hostileEp))
}

// hostilePaths is every API path the plugin serves.
var hostilePaths = []string{
	"/Plugin.Activate",
	"/NetworkDriver.GetCapabilities", "/NetworkDriver.CreateNetwork", "/NetworkDriver.AllocateNetwork",
	"/NetworkDriver.DeleteNetwork", "/NetworkDriver.FreeNetwork", "/NetworkDriver.CreateEndpoint",
	"/NetworkDriver.DeleteEndpoint", "/NetworkDriver.EndpointOperInfo", "/NetworkDriver.Join",
	"/NetworkDriver.Leave", "/NetworkDriver.DiscoverNew", "/NetworkDriver.DiscoverDelete",
	"/NetworkDriver.ProgramExternalConnectivity", "/NetworkDriver.RevokeExternalConnectivity",
	"/IpamDriver.GetCapabilities", "/IpamDriver.GetDefaultAddressSpaces", "/IpamDriver.RequestPool",
	"/IpamDriver.ReleasePool", "/IpamDriver.RequestAddress", "/IpamDriver.ReleaseAddress",
}

// malformedBodies are not JSON, or JSON of the wrong shape or types for
// every request: each must be refused (HTTP 400) before the driver sees it.
var malformedBodies = map[string]string{
	"truncated":     `{"NetworkID":`,
	"not json":      `<xml/>`,
	"array":         `[1,2,3]`,
	"string":        `"NetworkID"`,
	"number":        `42`,
	"wrong types":   `{"NetworkID":5,"EndpointID":[],"PoolID":{},"Options":"x","IPv4Data":"y","Interface":7,"Address":false,"DiscoveryType":"x","AddressSpace":1,"Pool":[]}`,
	"deep nesting":  strings.Repeat("[", 100000) + strings.Repeat("]", 100000),
	"trailing junk": `{"NetworkID":"x"} {"NetworkID":"y"}`,
	"too big":       `{"NetworkID":"` + strings.Repeat("a", 2*MaxBodyBytes) + `"}`,
}

// nonsenseBodies are well-formed requests that name nothing the plugin
// holds, or hold odd strings: any answer but a 5xx, and no state change.
var nonsenseBodies = map[string]string{
	"bad utf8":     "{\"NetworkID\":\"\xff\xfe\",\"PoolID\":\"\xff\"}",
	"nul bytes":    "{\"NetworkID\":\"\x00\",\"EndpointID\":\"\x00\"}",
	"nested wrong": `{"NetworkID":"x","Options":{"com.docker.network.generic":"str","com.docker.network.enable_ipv6":"yes"},"IPv4Data":[null,{"Pool":5}]}`,
	"deep object":  strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000),
	"huge string":  `{"NetworkID":"` + strings.Repeat("a", MaxBodyBytes-100) + `"}`,
	"unknown ids": fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q,"PoolID":"vxbridge-local/10.1.0.0/24","Address":"10.66.0.9"}`,
		strings.Repeat("c", 64), strings.Repeat("d", 64)),
	"id like a path": `{"NetworkID":"../../etc/passwd","EndpointID":"vxbridge:net:x","PoolID":"vxbridge-local/10.66.0.0/24/../x"}`,
	// The live endpoint under a network it is not on.
	"mismatched ids": fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q,"PoolID":"vxbridge-local/10.1.0.0/24"}`,
		strings.Repeat("c", 64), hostileEp),
}

// settleGoroutines waits until the goroutine count is back to at most want.
func settleGoroutines(want int) int {
	var n int
	for range 100 {
		runtime.GC()
		if n = runtime.NumGoroutine(); n <= want {
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
	return n
}

func (r *hostileRig) checkPanics(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.panics {
		t.Errorf("handler panicked: %s", p)
	}
}

// Malformed, mistyped and oversized bodies on every path, and unknown paths
// and methods: each is refused with an answer (never a panic or a hang),
// the store and the kernel rooms are unchanged, no goroutine is left.
func TestHostileRequests(t *testing.T) {
	r := newHostileRig(t)
	r.populate(t)
	before := r.state(t)
	r.client.CloseIdleConnections()
	goBefore := settleGoroutines(0) // just a reading; the settle below compares

	bodyIgnored := func(path string) bool {
		return path == "/Plugin.Activate" || strings.HasSuffix(path, "GetCapabilities") || strings.HasSuffix(path, "GetDefaultAddressSpaces")
	}
	for _, path := range hostilePaths {
		for name, body := range malformedBodies {
			code, out, err := r.call("POST", path, body)
			switch {
			case err != nil:
				t.Errorf("%s with %s: no answer: %v", path, name, err)
			case bodyIgnored(path):
				if code >= 500 {
					t.Errorf("%s with %s: HTTP %d: %.200s", path, name, code, out)
				}
			case code != http.StatusBadRequest:
				t.Errorf("%s with %s: HTTP %d, want 400: %.200s", path, name, code, out)
			case name == "too big" && !strings.Contains(out, "larger than"):
				t.Errorf("%s with an oversized body: want a 'larger than' refusal, got %.200s", path, out)
			}
		}
		if path == "/IpamDriver.RequestPool" {
			// A well-formed RequestPool without a Pool is a default-pool
			// request: it legitimately allocates.
			continue
		}
		for name, body := range nonsenseBodies {
			code, out, err := r.call("POST", path, body)
			if err != nil {
				t.Errorf("%s with %s: no answer: %v", path, name, err)
			} else if code >= 500 {
				t.Errorf("%s with %s: HTTP %d: %.200s", path, name, code, out)
			}
		}
	}
	for _, c := range []struct{ method, path string }{
		{"POST", "/NetworkDriver.Nope"}, {"POST", "/"}, {"GET", "/NetworkDriver.CreateNetwork"},
		{"PUT", "/IpamDriver.RequestPool"}, {"DELETE", "/NetworkDriver.DeleteNetwork"},
		{"POST", "/" + strings.Repeat("x", 8000)}, {"POST", "/NetworkDriver.CreateNetwork/extra"},
		{"POST", "/%2e%2e/%2e%2e/etc/passwd"}, {"POST", "/networkdriver.createnetwork"},
	} {
		code, out, err := r.call(c.method, c.path, `{}`)
		if err != nil {
			t.Errorf("%s %.60s: no answer: %v", c.method, c.path, err)
			continue
		}
		if code != http.StatusNotFound && code != http.StatusMethodNotAllowed && code != http.StatusMovedPermanently {
			t.Errorf("%s %.60s: HTTP %d, want 404/405: %.200s", c.method, c.path, code, out)
		}
	}
	r.checkPanics(t)
	if after := r.state(t); after != before {
		t.Errorf("hostile requests changed the state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	r.client.CloseIdleConnections()
	if n := settleGoroutines(goBefore); n > goBefore {
		buf := make([]byte, 1<<16)
		t.Errorf("goroutines: %d before, %d after the hostile requests:\n%s", goBefore, n, buf[:runtime.Stack(buf, true)])
	}
	// The state is still usable: the populated endpoint leaves cleanly.
	r.mustCall(t, "/NetworkDriver.Leave", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q}`, hostileNet, hostileEp))
}

// slowTimeouts are the server's timeouts scaled down for the test, spread
// apart so that each one's effect is told from the others': without
// ReadHeader (or Idle) Go falls back on Read, which comes later.
var slowTimeouts = server.Timeouts{ReadHeader: 500 * time.Millisecond, Read: 4 * time.Second, Idle: time.Second}

// Slow clients: connections that stall after part of the headers, after the
// headers with the body promised, or after a complete request (kept alive,
// or with its replies never read), do not block other requests; the server
// closes each of them on its own, within the timeout that covers it, and
// frees its goroutines while the clients still hold their ends; the state
// is unchanged.
func TestHostileSlowClients(t *testing.T) {
	r := newHostileRigTimeouts(t, &slowTimeouts)
	r.populate(t)
	before := r.state(t)
	r.client.CloseIdleConnections()
	goBefore := settleGoroutines(0)

	stalls := []struct {
		send  string
		limit time.Duration // the server must have closed it by then
	}{
		{"POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nHost: plugin\r\n", 2500 * time.Millisecond}, // headers never end
		{"P", 2500 * time.Millisecond}, // one byte, then nothing
		{"POST /NetworkDriver.DeleteNetwork HTTP/1.1\r\nHost: plugin\r\nContent-Length: 500\r\n\r\n{\"NetworkID\":", 7 * time.Second},      // body never ends
		{"POST /IpamDriver.ReleasePool HTTP/1.1\r\nHost: plugin\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"PoolID\":", 7 * time.Second}, // chunk never ends
		{"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 0\r\n\r\n", 2500 * time.Millisecond},                           // complete, then idle
	}
	var watch closeWatch
	for range 10 {
		for _, s := range stalls {
			c, err := net.Dial("unix", r.socket)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, s.send); err != nil {
				t.Fatal(err)
			}
			watch.add(c, s.limit, fmt.Sprintf("%.40q", s.send))
		}
	}
	// 50 stalled connections; normal calls still answer at once.
	for i := range 20 {
		callStart := time.Now()
		code, out, err := r.call("POST", "/NetworkDriver.GetCapabilities", "")
		if err != nil || code != http.StatusOK {
			t.Fatalf("call %d with stalled clients: HTTP %d %v: %s", i, code, err, out)
		}
		if took := time.Since(callStart); took > time.Second {
			t.Errorf("call %d took %v with stalled clients", i, took)
		}
	}
	r.mustCall(t, "/NetworkDriver.EndpointOperInfo", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q}`, hostileNet, hostileEp))
	r.client.CloseIdleConnections()
	// A client that stops reading its replies does not block the others either.
	c, err := net.Dial("unix", r.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := bufio.NewWriter(c)
	for range 200 {
		fmt.Fprintf(w, "POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 0\r\n\r\n")
	}
	w.Flush()
	if code, out, err := r.call("POST", "/IpamDriver.GetDefaultAddressSpaces", ""); err != nil || code != http.StatusOK {
		t.Errorf("call beside a client that does not read: HTTP %d %v: %s", code, err, out)
	}
	r.client.CloseIdleConnections()
	watch.add(c, 2500*time.Millisecond, "200 requests, then idle")
	for _, late := range watch.wait() {
		t.Error(late)
	}
	r.checkPanics(t)
	if after := r.state(t); after != before {
		t.Errorf("slow clients changed the state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if n := settleGoroutines(goBefore); n > goBefore {
		buf := make([]byte, 1<<16)
		t.Errorf("goroutines: %d before, %d with the slow clients' ends still open:\n%s", goBefore, n, buf[:runtime.Stack(buf, true)])
	}
}

// closeWatch reads stalled connections, discarding any reply, and notes
// those the server did not close within their limit.
type closeWatch struct {
	wg   sync.WaitGroup
	mu   sync.Mutex
	late []string
}

func (w *closeWatch) add(c net.Conn, limit time.Duration, what string) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		start := time.Now()
		_ = c.SetReadDeadline(start.Add(limit + 5*time.Second))
		_, err := io.Copy(io.Discard, c)
		if took := time.Since(start); took > limit {
			w.mu.Lock()
			w.late = append(w.late, fmt.Sprintf("%s: closed by the server after %v, want within %v (%v)", what, took.Round(time.Millisecond), limit, err))
			w.mu.Unlock()
		}
	}()
}

// wait returns the lateness of every connection once all are closed (or
// given up on).
func (w *closeWatch) wait() []string {
	w.wg.Wait()
	return w.late
}
