package bench

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/bench/result"
	"github.com/vxbridge/vxbridge/internal/testbed"
)

// TestBench runs the figures `make bench` asks for and writes the JSON to
// $VXBRIDGE_BENCH_OUT. Without it the test skips: benchmarks are not timed
// tests and `go test ./...` must not depend on the machine's speed.
// VXBRIDGE_BENCH_FIGURES (default "2,3,1") picks figures; VXBRIDGE_BENCH_BIN
// the plugin binary (default ../bin/vxbridge).
func TestBench(t *testing.T) {
	out := os.Getenv("VXBRIDGE_BENCH_OUT")
	if out == "" {
		t.Skip("benchmarks run with `make bench` (VXBRIDGE_BENCH_OUT names the results file)")
	}
	testbed.RequireRoot(t)
	bin := envOr("VXBRIDGE_BENCH_BIN", "../bin/vxbridge")
	figures := envOr("VXBRIDGE_BENCH_FIGURES", "2,3,1")
	run := &result.Run{Started: time.Now().UTC(), Machine: machine()}
	save := func() {
		run.Finished = time.Now().UTC()
		run.Machine.LoadAfter = loadAvg()
		if err := run.Write(out); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range strings.Split(figures, ",") {
		switch strings.TrimSpace(f) {
		case "2":
			t.Run("api", func(t *testing.T) {
				run.API = BenchAPI(t, bin, APIOptions{Rounds: 3, PerRound: 200, Clients: []int{1, 8, 32}})
			})
		case "3":
			t.Run("scaling", func(t *testing.T) {
				run.Scaling = BenchScaling(t, bin, ScalingOptions{Endpoints: 1000, Probes: 25, Restarts: 5})
			})
		case "1":
			t.Run("docker_run", func(t *testing.T) {
				run.DockerRun = BenchDockerRun(t, bin, DockerRunOptions{Rounds: 15})
			})
		default:
			t.Fatalf("VXBRIDGE_BENCH_FIGURES: unknown figure %q (have 1, 2, 3)", f)
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
