package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/bench/result"
	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// ConvergenceOptions sizes figure 5.
type ConvergenceOptions struct {
	Starts int // per driver
}

// convDriver is one network under test in figure 5.
type convDriver struct {
	name, net, prefix string
	dir               string // shared with B's prober: arm-I, reach-I
	local             string // the same for the prober on A
	// fdb lists B's forwarding entries of the network's VXLAN device as
	// MAC -> VTEP.
	fdb func() (map[string]string, error)
	mon *fdbMonitor // B's FDB additions, timestamped by the kernel event
}

const (
	probeInterval = time.Millisecond
	// namesInterval keeps the name prober (200 queries/s) within what
	// vxbridge's DNS server takes from one sender (500/s, names/server.go):
	// asking every ms for a name not yet known, the prober's excess was
	// dropped, docker's forwards of it waited out their timeout, and docker
	// refused the container's every forwarded query from then on.
	namesInterval = 5 * time.Millisecond
	reachWait     = 15 * time.Second
	goneWait      = 5 * time.Second
	cutOffWait    = 120 * time.Second
)

// BenchConvergence measures, for vxbridge and docker's overlay on the same
// two hosts, interleaved start by start:
//   - reach: `docker run -d --ip X` on host A returns at T; a prober
//     container on B, running since before (convergenceprobe: no docker
//     exec in the measurement), sends an echo to X every millisecond once
//     armed and records when the first reply came; reach = that - T. A
//     second prober on A itself says when the container was reachable at
//     all: lag = B's first reply - A's first reply is the cross-host part
//     (docker run -d returns only after the container runs, so reach is
//     often 0);
//   - gone: `docker rm -f` on A returns at T; B's VXLAN FDB is polled until
//     the container's MAC is gone;
//
// and at the end the cut-off: A's plugin and dockerd are killed (SIGKILL) and
// its underlay link taken down; B's tables are polled until they hold no
// entry pointing at A. vxbridge runs with its default --host-ttl.
func BenchConvergence(t testing.TB, bin string, o ConvergenceOptions) *result.Convergence {
	ttl := cluster.DefaultTTL
	x := newXHosts(t, bin, ttl)
	a, b := x.h[0], x.h[1]
	base := t.TempDir()
	bNS := vxNetNS(t, b) // where B's VXLAN device of the network is
	drivers := []*convDriver{
		{name: "vxbridge", net: xNet, prefix: xPrefix24, fdb: func() (map[string]string, error) {
			out, err := runCmd("nsenter", "--net="+bNS, "bridge", "fdb", "show", "dev", vxDevice())
			return parseFDB(out), err
		}},
		{name: "docker overlay", net: ovNet, prefix: ovPrefix},
	}
	for i, d := range drivers {
		d.dir = filepath.Join(base, strconv.Itoa(i))
		d.local = filepath.Join(d.dir, "local")
		if err := os.MkdirAll(d.local, 0o755); err != nil {
			t.Fatal(err)
		}
		targets := make([]string, o.Starts)
		for k := range targets {
			targets[k] = d.prefix + strconv.Itoa(100+k)
		}
		for _, p := range []struct {
			h        *testbed.Host
			name, ip string
			dir      string
		}{{b, fmt.Sprintf("probe%d", i), d.prefix + "30", d.dir}, {a, fmt.Sprintf("local%d", i), d.prefix + "31", d.local}} {
			p.h.MustDocker(t, "run", "-d", "--name", p.name, "--network", d.net, "--ip", p.ip,
				"--cap-add", "NET_ADMIN", "-v", p.dir+":"+probeDir, benchImg,
				probeBin, "-dir", probeDir, "-targets", strings.Join(targets, ","), "-interval", probeInterval.String())
		}
		// A container on A that stays to the cut-off, and proof that A
		// reaches the prober (its entries are programmed on A).
		keep := fmt.Sprintf("keep%d", i)
		run(t, a, keep, d.net, d.prefix+"40", "sleep", "1000000")
		waitPing(t, d.name, func(args ...string) (string, error) {
			return a.Docker(append([]string{"exec", keep, "ping"}, args...)...)
		}, d.prefix+"30")
	}
	namers := make([]*nameProber, len(drivers))
	for i, d := range drivers {
		namers[i] = startNameProber(t, b, d, i, o.Starts)
	}
	var ovNS string
	drivers[1].fdb, ovNS = x.overlayFDB(t, b)
	pid := strconv.Itoa(b.Dockerd().Pid())
	drivers[0].mon = startFDBMonitor(t, "nsenter", "--net="+bNS, "bridge", "-timestamp", "monitor", "fdb")
	drivers[1].mon = startFDBMonitor(t, "nsenter", "-t", pid, "-m", "nsenter", "--net="+ovNS, "bridge", "-timestamp", "monitor", "fdb")

	reach := make([][]float64, len(drivers))
	lag := make([][]float64, len(drivers))
	fromStart := make([][]float64, len(drivers))
	localStart := make([][]float64, len(drivers))
	programmed := make([][]float64, len(drivers))
	lead := make([][]float64, len(drivers))
	runs := make([][]float64, len(drivers))
	gone := make([][]float64, len(drivers))
	out := &result.Convergence{Starts: o.Starts, ProbeIntervalMs: float64(probeInterval) / float64(time.Millisecond),
		NamesIntervalMs: float64(namesInterval) / float64(time.Millisecond),
		HostTTLSeconds:  ttl.Seconds()}
	res := make([]result.ConvergenceDriver, len(drivers))
	for k := 0; k < o.Starts; k++ {
		for j := range drivers {
			i := (j + k) % len(drivers)
			d := drivers[i]
			name := startName(i, k)
			for _, dir := range []string{d.dir, d.local} {
				touch(t, dir, "arm-"+strconv.Itoa(k))
			}
			namers[i].arm(t, k)
			start := time.Now()
			run(t, a, name, d.net, d.prefix+strconv.Itoa(100+k), "sleep", "1000000")
			returned := time.Now()
			runs[i] = append(runs[i], ms(returned.Sub(start)))
			at, ok := waitReach(d.dir, k, reachWait)
			local, lok := waitReach(d.local, k, reachWait)
			namers[i].found(t, d.name, k, returned)
			mac := strings.TrimSpace(a.MustDocker(t, "inspect", "-f",
				fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).MacAddress}}`, d.net), name))
			if lok {
				localStart[i] = append(localStart[i], ms(local.Sub(start)))
			}
			if p, ok := d.mon.added(mac, reachWait); ok {
				programmed[i] = append(programmed[i], ms(p.Sub(start)))
				if lok {
					lead[i] = append(lead[i], ms(local.Sub(p)))
				}
			} else {
				t.Logf("%s start %d: %s not seen added to B's FDB", d.name, k, mac)
			}
			if ok && lok {
				l := ms(at.Sub(local))
				res[i].LagRawMs = append(res[i].LagRawMs, l)
				lag[i] = append(lag[i], max(l, 0))
			}
			if !ok {
				res[i].Missed++
				t.Logf("%s start %d: not reachable from B within %s", d.name, k, reachWait)
			} else {
				delta := ms(at.Sub(returned))
				res[i].ReachRawMs = append(res[i].ReachRawMs, delta)
				if delta < 0 {
					res[i].BeforeReturn++
				}
				reach[i] = append(reach[i], max(delta, 0))
				fromStart[i] = append(fromStart[i], ms(at.Sub(start)))
			}
			a.MustDocker(t, "rm", "-f", name)
			removed := time.Now()
			namers[i].disarm(t, k) // it asks from now on; its stamp is read below
			if g, ok := waitGone(d.fdb, mac, goneWait); ok {
				gone[i] = append(gone[i], ms(g.Sub(removed)))
			} else {
				res[i].GoneMissed++
				t.Logf("%s start %d: %s still in B's FDB %s after docker rm -f", d.name, k, mac, goneWait)
			}
			namers[i].removed(t, d.name, k, removed)
		}
		if k%10 == 9 {
			t.Logf("%d starts: B reachable after its host: vxbridge p50 %.1f ms, overlay %.1f ms", k+1,
				result.Median(lag[0]), result.Median(lag[1]))
		}
	}
	for i, d := range drivers {
		res[i].Driver = d.name
		res[i].Reach = result.SummariseMs(reach[i])
		res[i].Lag = result.SummariseMs(lag[i])
		res[i].FromRunStart = result.SummariseMs(fromStart[i])
		res[i].LocalFromRunStart = result.SummariseMs(localStart[i])
		res[i].Programmed = result.SummariseMs(programmed[i])
		res[i].Lead = result.SummariseMs(lead[i])
		if len(lead[i]) > 0 {
			res[i].LeadMinMs = slices.Min(lead[i])
		}
		res[i].GoneWaitS = goneWait.Seconds()
		res[i].Run = result.SummariseMs(runs[i])
		res[i].Gone = result.SummariseMs(gone[i])
		namers[i].summarise(&res[i])
		out.Drivers = append(out.Drivers, res[i])
	}
	out.CutOff = x.cutOff(t, drivers)
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// waitReach waits for the prober's reach-K file and returns the time in it.
func waitReach(dir string, k int, wait time.Duration) (time.Time, bool) {
	return waitStamp(dir, "reach-"+strconv.Itoa(k), wait)
}

// waitStamp waits for a prober's file and returns the time in it.
func waitStamp(dir, name string, wait time.Duration) (time.Time, bool) {
	path := filepath.Join(dir, name)
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return time.Time{}, false
		}
		return time.Unix(0, ns), true
	}
	return time.Time{}, false
}

// waitGone polls fdb until mac is absent and returns when it saw that.
func waitGone(fdb func() (map[string]string, error), mac string, wait time.Duration) (time.Time, bool) {
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); {
		m, err := fdb()
		if err == nil {
			if _, ok := m[mac]; !ok {
				return time.Now(), true
			}
		}
	}
	return time.Time{}, false
}

// parseFDB reads `bridge fdb show` lines "MAC dst IP ..." into MAC -> IP.
func parseFDB(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		for i := 1; i+1 < len(f); i++ {
			if f[i] == "dst" {
				m[f[0]] = f[i+1]
				break
			}
		}
	}
	return m
}

// overlayFDB reads the FDB inside B's sandbox namespace of the overlay
// network. dockerd keeps its namespaces under EXEC-ROOT/netns, mounted in
// its own (private) mount namespace, so the look-up enters that first.
func (x *xhosts) overlayFDB(t testing.TB, h *testbed.Host) (func() (map[string]string, error), string) {
	t.Helper()
	id := strings.TrimSpace(h.MustDocker(t, "network", "inspect", "-f", "{{.Id}}", ovNet))
	pid := strconv.Itoa(h.Dockerd().Pid())
	dir := filepath.Join(h.Dir(), "exec", "netns") // dockerd's --exec-root D/exec
	var nsPath string
	err := testbed.Poll(30*time.Second, func() error {
		out, err := runCmd("nsenter", "-t", pid, "-m", "ls", dir)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		for _, n := range strings.Fields(out) {
			if strings.HasPrefix(n, "1-") && strings.HasPrefix(id, strings.TrimPrefix(n, "1-")) {
				nsPath = filepath.Join(dir, n)
				return nil
			}
		}
		return fmt.Errorf("no overlay namespace for %s in %q", id, out)
	})
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	return func() (map[string]string, error) {
		out, err := runCmd("nsenter", "-t", pid, "-m", "nsenter", "--net="+nsPath, "bridge", "fdb", "show")
		return parseFDB(out), err
	}, nsPath
}

// cutOff kills A's plugin and dockerd (SIGKILL), takes A's underlay link
// down, and measures for each driver how long B's FDB keeps entries
// pointing at A.
func (x *xhosts) cutOff(t testing.TB, drivers []*convDriver) []result.CutOffDrain {
	a := x.h[0]
	for _, d := range drivers {
		if err := testbed.Poll(10*time.Second, func() error {
			if !pointsAt(d.fdb, x.vtep[0]) {
				return fmt.Errorf("%s: B's FDB holds no entry of A before the cut", d.name)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Plugin().Kill9(); err != nil {
		t.Fatal(err)
	}
	if err := a.Dockerd().Kill9(); err != nil {
		t.Fatal(err)
	}
	a.Exec(t, "ip", "link", "set", testbed.UnderlayHostLink, "down")
	cut := time.Now()
	out := make([]result.CutOffDrain, len(drivers))
	for i, d := range drivers {
		out[i] = result.CutOffDrain{Driver: d.name, TimedOut: true,
			What: "host A's plugin and dockerd killed (SIGKILL), its underlay link down, until B's FDB has no entry to A"}
	}
	pending := len(drivers)
	for pending > 0 && time.Since(cut) < cutOffWait {
		for i, d := range drivers {
			if out[i].TimedOut && !pointsAt(d.fdb, x.vtep[0]) {
				out[i].TimedOut, out[i].Ms = false, ms(time.Since(cut))
				pending--
				t.Logf("%s: B dropped cut-off host A after %.0f ms", d.name, out[i].Ms)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range out {
		out[i].WaitedMs = ms(time.Since(cut))
	}
	return out
}

// pointsAt reports whether the FDB holds an entry to vtep (a read error
// counts as yes: nothing is known to be gone).
func pointsAt(fdb func() (map[string]string, error), vtep string) bool {
	m, err := fdb()
	if err != nil {
		return true
	}
	for _, dst := range m {
		if dst == vtep {
			return true
		}
	}
	return false
}

// runCmd runs a command of this machine and returns its combined output.
func runCmd(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// fdbMonitor is `bridge -timestamp monitor fdb` writing to a file; the
// process is ours and is killed by its pid when the test ends.
type fdbMonitor struct{ path string }

func startFDBMonitor(t testing.TB, name string, args ...string) *fdbMonitor {
	t.Helper()
	m := &fdbMonitor{path: filepath.Join(t.TempDir(), "fdb-monitor.log")}
	f, err := os.Create(m.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return m
}

// added waits until the monitor has seen mac added with a VXLAN
// destination and returns the event's timestamp.
func (m *fdbMonitor) added(mac string, wait time.Duration) (time.Time, bool) {
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile(m.path)
		if err != nil {
			continue
		}
		if at, ok := firstAdd(string(b), mac); ok {
			return at, true
		}
	}
	return time.Time{}, false
}

// firstAdd finds the first "MAC ... dst ..." event after a "Timestamp: Sun
// Nov 22 21:20:23 2026 186002 usec" line.
func firstAdd(log, mac string) (time.Time, bool) {
	var ts time.Time
	for _, line := range strings.Split(log, "\n") {
		if rest, ok := strings.CutPrefix(line, "Timestamp: "); ok {
			f := strings.Fields(rest)
			if len(f) < 6 {
				continue
			}
			t, err := time.ParseInLocation("Mon Jan 2 15:04:05 2006", strings.Join(f[:5], " "), time.Local)
			us, err2 := strconv.Atoi(f[5])
			if err == nil && err2 == nil {
				ts = t.Add(time.Duration(us) * time.Microsecond)
			}
			continue
		}
		if strings.HasPrefix(line, mac+" ") && strings.Contains(line, " dst ") && !ts.IsZero() {
			return ts, true
		}
	}
	return time.Time{}, false
}

// vxNetNS is the path of the namespace where h's vxbridge cross-host
// network lives: its own (the plugin's one namespace under its
// --netns-dir), or the host's for a plugin without them.
func vxNetNS(t testing.TB, h *testbed.Host) string {
	t.Helper()
	names, err := h.PluginNamespaces()
	switch {
	case err != nil:
		t.Fatal(err)
	case len(names) > 1:
		t.Fatalf("%s: %d network namespaces, want the one of the benchmark's network", h.Name, len(names))
	case len(names) == 1:
		return filepath.Join(h.PluginNetNSDir(), names[0])
	}
	return h.NetNS().Path()
}
