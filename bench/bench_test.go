package bench

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/bench/result"
	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// TestBench runs the figures `make bench` asks for and writes the JSON to
// $VXBRIDGE_BENCH_OUT, keeping the figures of that file this run does not
// measure (each with the time it was measured). Without it the test skips:
// benchmarks are not timed tests and `go test ./...` must not depend on the
// machine's speed. VXBRIDGE_BENCH_FIGURES (default "2,3,1,4,5") picks
// figures; VXBRIDGE_BENCH_BIN the plugin binary (default ../bin/vxbridge).
func TestBench(t *testing.T) {
	out := os.Getenv("VXBRIDGE_BENCH_OUT")
	if out == "" {
		t.Skip("benchmarks run with `make bench` (VXBRIDGE_BENCH_OUT names the results file)")
	}
	testbed.RequireRoot(t)
	bin := envOr("VXBRIDGE_BENCH_BIN", "../bin/vxbridge")
	figures := envOr("VXBRIDGE_BENCH_FIGURES", "2,3,1,4,5")
	prev, err := result.Read(out)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("earlier results: %v", err)
	}
	run := &result.Run{Started: time.Now().UTC(), Machine: machine(), Measured: map[string]result.Measurement{}}
	save := func() {
		run.Finished = time.Now().UTC()
		run.Machine.LoadAfter = loadAvg()
		run.Keep(prev)
		if err := run.Write(out); err != nil {
			t.Fatal(err)
		}
	}
	figure := func(key string, fn func(t *testing.T)) {
		m := result.Measurement{Started: time.Now().UTC(), LoadBefore: loadAvg()}
		if t.Run(key, fn) {
			m.Finished, m.LoadAfter = time.Now().UTC(), loadAvg()
			run.Measured[key] = m
		}
	}
	// VXBRIDGE_BENCH_SHORT=1 shrinks figures 4, 5 and 6 to a smoke run of
	// the harness itself (its numbers are not worth keeping).
	short := os.Getenv("VXBRIDGE_BENCH_SHORT") != ""
	xo, co := CrossHostOptions{Rounds: 10, IperfSeconds: 4, PingCount: 200}, ConvergenceOptions{Starts: 40}
	if short {
		xo, co = CrossHostOptions{Rounds: 1, IperfSeconds: 1, PingCount: 20}, ConvergenceOptions{Starts: 3}
	}
	for _, f := range strings.Split(figures, ",") {
		switch strings.TrimSpace(f) {
		case "2":
			figure(result.KeyAPI, func(t *testing.T) {
				run.API = BenchAPI(t, bin, APIOptions{Rounds: 3, PerRound: 200, Clients: []int{1, 8, 32}})
			})
		case "3":
			figure(result.KeyScaling, func(t *testing.T) {
				run.Scaling = BenchScaling(t, bin, ScalingOptions{Endpoints: 1000, Probes: 75, Restarts: 5})
			})
		case "1":
			figure(result.KeyDockerRun, func(t *testing.T) {
				run.DockerRun = BenchDockerRun(t, bin, DockerRunOptions{Rounds: 15})
			})
		case "4":
			figure(result.KeyCrossHost, func(t *testing.T) {
				run.CrossHost = BenchCrossHost(t, bin, xo)
			})
		case "5":
			figure(result.KeyConvergence, func(t *testing.T) {
				run.Convergence = BenchConvergence(t, bin, co)
			})
		case "6":
			so, err := SimOptionsFromEnv(short)
			if err != nil {
				t.Fatal(err)
			}
			figure(result.KeySim, func(t *testing.T) {
				run.Sim = BenchSim(t, bin, so)
				if so.Keep && prev != nil {
					if err := run.Sim.KeepSim(prev.Sim); err != nil {
						t.Fatal(err)
					}
				}
			})
		default:
			t.Fatalf("VXBRIDGE_BENCH_FIGURES: unknown figure %q (have 1 to 6)", f)
		}
		save() // a later figure failing keeps the earlier ones
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func machine() result.Machine {
	m := result.Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadBefore: loadAvg()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := exec.Command("dockerd", "--version").Output(); err == nil {
		m.Docker = strings.TrimSpace(string(b))
	}
	return m
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
