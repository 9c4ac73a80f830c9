package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/ipam"
	"github.com/vxbridge/vxbridge/store"
)

// Crash points (issue 7): a `-tags crashhook` build of the plugin kills
// itself with SIGKILL at a named step of an API call (main_crashhook.go,
// VXBRIDGE_CRASH_AT). Each scenario drives a real dockerd to that step, then
// starts the normal plugin on the same state dir at once (inside docker's
// 30 s of connection retries), lets docker finish or fail its command and
// cleans up as a user would (repeat a failed rm, remove a container whose
// start failed). Then: LEAKS() is empty, no address the IPAM hands out is
// held by a live endpoint, and the same network and container can be
// created again. The restarted plugin collects orphans after
// crashOrphanGrace, so LEAKS() is given 30 s to come out empty.

// crashAction is the docker command that reaches a crash point.
type crashAction int

const (
	actNetworkCreate crashAction = iota // docker network create
	actNetworkRemove                    // docker network rm
	actRun                              // docker run -d (on an existing network)
	actRemove                           // docker rm -f (of a running container)
)

func (a crashAction) String() string {
	return [...]string{"network-create", "network-rm", "run", "rm"}[a]
}

type crashScenario struct {
	at     string // VXBRIDGE_CRASH_AT: point[@n], n counted from the crash plugin's start
	action crashAction
	ports  bool // the container publishes a port (-p)
}

// point is the crash point without its count.
func (s crashScenario) point() string { p, _, _ := strings.Cut(s.at, "@"); return p }

// name is the subtest name: the point (slashes would nest subtests) and the action.
func (s crashScenario) name() string {
	n := strings.ReplaceAll(s.point(), "/", ":") + "_" + s.action.String()
	if s.ports {
		n += "-p"
	}
	return n
}

// crashScenarios covers every crash point at least once (checked). The
// crash plugin serves the scenario's setup too: a network create before a
// `docker run` takes one RequestPool and one RequestAddress (the gateway),
// hence the @n counts.
var crashScenarios = []crashScenario{
	{at: ipam.CrashPoolSaved, action: actNetworkCreate},
	{at: ipam.CrashAddressSaved, action: actNetworkCreate}, // the gateway
	{at: driver.CrashNetworkKernel, action: actNetworkCreate},
	{at: driver.CrashNetworkSaved, action: actNetworkCreate},
	{at: ipam.CrashAddressSaved + "@2", action: actRun}, // the container's address
	{at: driver.CrashEndpointVeth, action: actRun},
	{at: driver.CrashEndpointSaved, action: actRun},
	{at: driver.CrashJoinSaved, action: actRun},
	{at: driver.CrashPortsKernel, action: actRun, ports: true},
	{at: driver.CrashPortsRevokeRecord, action: actRemove, ports: true},
	{at: driver.CrashLeaveSaved, action: actRemove, ports: true},
	{at: driver.CrashEndpointDeleted, action: actRemove},
	{at: driver.CrashEndpointVethGone, action: actRemove},
	{at: ipam.CrashAddressReleased, action: actRemove}, // the container's address
	{at: driver.CrashNetworkDeleted, action: actNetworkRemove},
	{at: ipam.CrashAddressReleased, action: actNetworkRemove}, // the gateway
	{at: ipam.CrashPoolReleased, action: actNetworkRemove},
}

// TestCrashScenariosCoverEveryPoint: no crash point is left out, and every
// scenario names a real one.
func TestCrashScenariosCoverEveryPoint(t *testing.T) {
	all := append(slices.Clone(driver.CrashPoints), ipam.CrashPoints...)
	covered := map[string]bool{}
	for _, s := range crashScenarios {
		if !slices.Contains(all, s.point()) {
			t.Errorf("scenario %s: %q is not a crash point of driver or ipam", s.name(), s.point())
		}
		covered[s.point()] = true
	}
	for _, p := range all {
		if !covered[p] {
			t.Errorf("crash point %q has no scenario in crashScenarios", p)
		}
	}
}

func TestFaultCrashPoints(t *testing.T) {
	requirePlugin(t)
	TestCrashScenariosCoverEveryPoint(t)
	crashBin := buildCrashPlugin(t)
	for i, sc := range crashScenarios {
		t.Run(sc.name(), func(t *testing.T) {
			// A host each: what one scenario leaks must not fail the next.
			h := testbed.NewHost(t, testbed.HostOptions{Name: "fk", Debug: true})
			h.ImportImage(t)
			runCrashScenario(t, h, crashBin, i+1, sc)
		})
	}
}

// buildCrashPlugin builds the plugin with the crash hook into the test's
// temporary directory.
func buildCrashPlugin(t *testing.T) string {
	t.Helper()
	goBin, err := testbed.GoTool()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "vxbridge-crashhook")
	cmd := exec.Command(goBin, "build", "-tags", "crashhook", "-o", out, "github.com/vxbridge/vxbridge")
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags crashhook: %v\n%s", err, b)
	}
	return out
}

// startCrashPlugin replaces the host's plugin with the crash build set to
// die at at. The variable is set only while the plugin starts (the testbed
// hands the test's environment to what it starts).
func startCrashPlugin(t *testing.T, h *testbed.Host, crashBin, at string) *testbed.Process {
	t.Helper()
	if p := h.Plugin(); p != nil {
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	os.Setenv("VXBRIDGE_CRASH_AT", at)
	defer os.Unsetenv("VXBRIDGE_CRASH_AT")
	return h.StartPlugin(t, crashBin)
}

// crashOrphanGrace is the restarted plugin's --orphan-grace (default 2
// min): what a lost reply leaves for nobody (an address, an endpoint never
// joined) is collected that long after it was first seen. Docker's calls
// here end about 1 s after the crash, so 5 s keeps the collection from
// racing them and the scenario short.
const crashOrphanGrace = 5 * time.Second

// crashNames are a scenario's docker objects.
type crashNames struct {
	net, subnet, gateway, ctr string
	hostPort                  int
}

func (c crashNames) netArgs() []string {
	return []string{"network", "create", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", c.subnet, c.net}
}

func (c crashNames) runArgs(ports bool) []string {
	args := []string{"run", "-d", "--name", c.ctr, "--network", c.net}
	if ports {
		args = append(args, "-p", fmt.Sprintf("%d:80", c.hostPort))
	}
	return append(args, testbed.Image, "sleep", "300")
}

func runCrashScenario(t *testing.T, h *testbed.Host, crashBin string, i int, sc crashScenario) {
	c := crashNames{net: fmt.Sprintf("fk%d", i), subnet: fmt.Sprintf("10.79.%d.0/28", i),
		gateway: fmt.Sprintf("10.79.%d.1", i), ctr: fmt.Sprintf("fk%dc", i), hostPort: 18000 + i}
	p := startCrashPlugin(t, h, crashBin, sc.at)
	var trigger []string
	switch sc.action {
	case actNetworkCreate:
		trigger = c.netArgs()
	case actNetworkRemove:
		h.MustDocker(t, c.netArgs()...)
		trigger = []string{"network", "rm", c.net}
	case actRun:
		h.MustDocker(t, c.netArgs()...)
		trigger = c.runArgs(sc.ports)
	case actRemove:
		h.MustDocker(t, c.netArgs()...)
		h.MustDocker(t, c.runArgs(sc.ports)...)
		trigger = []string{"rm", "-f", c.ctr}
	}

	type result struct {
		out  string
		err  error
		took time.Duration
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		out, err := h.Docker(trigger...)
		done <- result{strings.TrimSpace(out), err, time.Since(start)}
	}()
	select {
	case <-p.Done():
	case r := <-done:
		t.Fatalf("docker %s ended (%v) without the plugin reaching %s:\n%s\n--- plugin log ---\n%s",
			strings.Join(trigger, " "), r.err, sc.at, r.out, tailLines(p.Log(), 30))
	case <-time.After(90 * time.Second):
		t.Fatalf("plugin still running 90 s after docker %s; %s never reached", strings.Join(trigger, " "), sc.at)
	}
	if want := fmt.Sprintf("pid %d killed at %s ", p.Pid(), sc.point()); !strings.Contains(p.Log(), want) {
		t.Fatalf("plugin pid %d ended (%v) but did not log %q:\n%s", p.Pid(), p.ExitErr(), want, tailLines(p.Log(), 30))
	}
	if err := p.ExitErr(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("plugin pid %d exit: %v, want killed by SIGKILL", p.Pid(), err)
	}
	died := time.Now()
	h.StartPlugin(t, pluginBin, "--orphan-grace", crashOrphanGrace.String())
	r := <-done
	t.Logf("%s: docker %s ended %v after the crash (%v in all): err=%v: %s", sc.at, strings.Join(trigger, " "),
		time.Since(died).Round(time.Millisecond), r.took.Round(time.Millisecond), r.err, r.out)

	// What a user does after the failed command: remove the container whose
	// start failed, repeat a failed removal.
	recoverAfterCrash(t, h, c, sc, r.err)
	clean := noLeaksWithin(t, h, 30*time.Second)
	if clean {
		t.Logf("%s: LEAKS() empty %v after the crash", sc.at, time.Since(died).Round(time.Millisecond))
	}
	checkAddressesUnique(t, h, c.subnet)

	// The same network and container again, then nothing left. After a
	// leak the later checks would only repeat it.
	removeContainers(t, h, c.ctr)
	if _, err := h.Docker("network", "inspect", c.net); err == nil {
		h.MustDocker(t, "network", "rm", c.net)
	}
	clean = clean && noLeaksWithin(t, h, 10*time.Second)
	h.MustDocker(t, c.netArgs()...)
	h.MustDocker(t, c.runArgs(sc.ports)...)
	waitPing(t, h, c.ctr, c.gateway)
	checkAddressesUnique(t, h, c.subnet)
	clean = clean && noLeaksWithin(t, h, 10*time.Second)
	removeContainers(t, h, c.ctr)
	h.MustDocker(t, "network", "rm", c.net)
	if clean {
		requireNoLeaks(t, h, 10*time.Second)
	} else if left := leaks(t, h); len(left) > 0 {
		t.Logf("%s: after the network and container were made again and removed, LEAKS() still:\n  %s", sc.at, strings.Join(left, "\n  "))
	}
}

// noLeaksWithin is requireNoLeaks saying whether it passed.
func noLeaksWithin(t *testing.T, h *testbed.Host, within time.Duration) bool {
	t.Helper()
	var last []string
	err := testbed.Poll(within, func() error {
		if last = leaks(t, h); len(last) > 0 {
			return fmt.Errorf("%d leak(s)", len(last))
		}
		return nil
	})
	if err != nil {
		t.Errorf("%s: LEAKS() not empty after %v:\n  %s", h.Name, within, strings.Join(last, "\n  "))
	}
	return err == nil
}

// recoverAfterCrash finishes what the crashed command left, as its user
// would: a container whose start failed is removed, a removal that failed is
// repeated (and must now succeed).
func recoverAfterCrash(t *testing.T, h *testbed.Host, c crashNames, sc crashScenario, cmdErr error) {
	t.Helper()
	switch sc.action {
	case actNetworkRemove:
		if cmdErr != nil {
			h.MustDocker(t, "network", "rm", c.net)
		}
	case actRun:
		if cmdErr != nil {
			removeContainers(t, h, c.ctr)
		} else {
			waitPing(t, h, c.ctr, c.gateway) // it started: it must work
		}
	case actRemove:
		if cmdErr != nil {
			h.MustDocker(t, "rm", "-f", c.ctr)
		}
	}
}

// checkAddressesUnique asks the plugin's IPAM for every free address of the
// pool of subnet, as docker asks for new containers, and fails if one of
// them is the gateway or an address a live endpoint holds, or if two live
// endpoints hold the same address; then it gives them back. No pool (the
// network is gone) is fine: LEAKS() checked the rest.
func checkAddressesUnique(t *testing.T, h *testbed.Host, subnet string) {
	t.Helper()
	v, err := gatherLeakView(h, unmanagedPlugin(h))
	if err != nil {
		t.Errorf("address check: %v", err)
		return
	}
	pfx := netip.MustParsePrefix(subnet)
	var pool *store.Pool
	for i := range v.pools {
		if v.pools[i].Prefix == pfx {
			pool = &v.pools[i]
		}
	}
	if pool == nil {
		return
	}
	held := map[netip.Addr]string{}
	for id, ep := range v.pluginEps {
		if a, err := netip.ParsePrefix(ep.IPv4); err == nil && pfx.Contains(a.Addr()) {
			if other, dup := held[a.Addr()]; dup {
				t.Errorf("address %s held by two endpoints: %s and %s", a.Addr(), shortID(other), shortID(id))
			}
			held[a.Addr()] = id
		}
	}
	for a, kind := range v.addrs[pool.ID] {
		if kind == store.KindGateway {
			held[a] = "the gateway"
		}
	}
	got, err := exhaustPool(h, pool.ID, 1<<(32-pfx.Bits()))
	for _, a := range got {
		if owner, ok := held[a]; ok {
			t.Errorf("IPAM handed out %s, already held by %s", a, owner)
		}
	}
	if err != nil {
		t.Errorf("address check: %v", err)
	}
	for _, a := range got {
		body := fmt.Sprintf(`{"PoolID":%q,"Address":%q}`, pool.ID, a)
		if code, out, err := testbed.PluginCall(h.PluginSocket(), "/IpamDriver.ReleaseAddress", body); err != nil || code != http.StatusOK || strings.Contains(out, "Err") {
			t.Errorf("release %s: HTTP %d %v %s", a, code, err, out)
		}
	}
}

// exhaustPool requests addresses of pool until the IPAM says it is full
// (at most limit), and returns them.
func exhaustPool(h *testbed.Host, poolID string, limit int) ([]netip.Addr, error) {
	var got []netip.Addr
	for range limit {
		code, out, err := testbed.PluginCall(h.PluginSocket(), "/IpamDriver.RequestAddress", fmt.Sprintf(`{"PoolID":%q}`, poolID))
		if err != nil || code != http.StatusOK {
			return got, fmt.Errorf("RequestAddress: HTTP %d %v %s", code, err, out)
		}
		var resp struct{ Address, Error string }
		if err := json.Unmarshal([]byte(out), &resp); err != nil {
			return got, fmt.Errorf("RequestAddress reply %q: %v", out, err)
		}
		if resp.Error != "" {
			return got, nil // full
		}
		a, err := netip.ParsePrefix(resp.Address)
		if err != nil {
			return got, fmt.Errorf("RequestAddress reply %q: %v", out, err)
		}
		got = append(got, a.Addr())
	}
	return got, fmt.Errorf("pool %s not full after %d addresses", poolID, limit)
}

// tailLines is the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
