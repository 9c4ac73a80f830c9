package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/bench/result"
)

// TestRunWritesPageAndPlots renders a small synthetic run end to end: the
// page must carry the verdicts the numbers imply and link plots that exist.
func TestRunWritesPageAndPlots(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "results.json")
	ms := func(v float64) result.Dist { return result.Dist{N: 5, P50Ms: v, P99Ms: v * 2, MaxMs: v * 2} }
	r := &result.Run{Started: time.Now(), Finished: time.Now(),
		API: &result.API{Rounds: 1, PerRound: 10, Runs: []result.APIRun{
			{Clients: 1, PerSecond: 600, PerSecondRounds: []float64{600}, Lifecycle: ms(2),
				Calls: map[string]result.Dist{"NetworkDriver.Join": ms(1)}},
			{Clients: 8, PerSecond: 30, PerSecondRounds: []float64{30}, Lifecycle: ms(200)}},
			Anchors: []result.APIAnchor{{Name: "kernel", PerSecond: 50, Latency: ms(20)},
				{Name: "kernel floor x8", PerSecond: 300, Latency: ms(3), MachineCPUMsPerLifecycle: 2.5,
					Steps: map[string]result.Dist{floorAddStep: ms(1.5)}}}},
		Scaling: &result.Scaling{Endpoints: 20, CreateMs: make([]float64, 20),
			Probes: []result.Probe{{Fill: 10, Latency: ms(30), KernelAdd: ms(1), KernelDel: ms(15)},
				{Fill: 20, Latency: ms(45), KernelAdd: ms(1.5), KernelDel: ms(16)}},
			ReadyFull: ms(500), RSSFullKiB: 30 << 10},
		DockerRun: &result.DockerRun{Rounds: 3, Networks: []result.DockerRunNet{
			{Network: "docker bridge", Latency: ms(500), Ratio: 1}, {Network: "vxbridge", Latency: ms(510), Ratio: 1.02}}},
		CrossHost: &result.CrossHost{Rounds: 2, IperfSeconds: 5, PingCount: 10, PingInterval: 0.01, Anchor: "raw vxlan",
			Paths: []result.CrossHostPath{
				{Name: "raw vxlan", Gbps: 8, GbpsRounds: []float64{8, 8}, Retransmits: []int{0, 1}, RTT: ms(0.2), GbpsRatio: 1, RTTP50Ratio: 1, MTU: 1450},
				{Name: "vxbridge", Gbps: 7, GbpsRounds: []float64{7, 7}, Retransmits: []int{2, 3}, RTT: ms(0.3), GbpsRatio: 0.875, RTTP50Ratio: 1.5, MTU: 1450}}},
		Convergence: &result.Convergence{Starts: 5, ProbeIntervalMs: 1, HostTTLSeconds: 20,
			Drivers: []result.ConvergenceDriver{
				{Driver: "vxbridge", Reach: ms(0), Lag: ms(3), BeforeReturn: 5},
				{Driver: "docker overlay", Reach: ms(0), Lag: ms(20)}},
			CutOff: []result.CutOffDrain{{Driver: "vxbridge", Ms: 18000}, {Driver: "docker overlay", TimedOut: true, WaitedMs: 120000}}},
		Measured: map[string]result.Measurement{result.KeyAPI: {Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}},
	}
	for i := range r.Scaling.CreateMs {
		r.Scaling.CreateMs[i] = 5
	}
	if err := r.Write(in); err != nil {
		t.Fatal(err)
	}
	md := filepath.Join(dir, "BENCHMARKS.md")
	if err := run(in, filepath.Join(dir, "plots"), md); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for _, want := range []string{
		"| 1 | 600.0 | 600 | 12.00x | 2.00x | 2.0 | 4.0 | 0.0 | n/a | 0 | rate met, p99 met |",
		"| 8 | 30.0 | 30 | 0.60x | 0.10x | 200.0 | 400.0 | 0.0 | n/a | 0 | rate **missed**, p99 **missed** |",
		"| kernel floor x8 | 300 | 3.00 | 6.00 | 2.5 |",
		"no IPAM: 300/s, 0.60x the rate target, which is therefore out of reach on this machine. Its veth creation alone has a p99 of 3.0 ms",
		"| probe lifecycle at 20 vs at 10 | 1.50x | within 1.2x: **missed** |",
		"| 20 | 5.00 | 45.0 | 90.0 | 1.50 | 16.00 |",
		"the probe lifecycle's p50 moved by +15.0 ms; the kernel's own veth add on the same bridge by +0.50 ms and its delete by +1.00 ms.",
		"under 1000 ms: met", "| vxbridge | 510 | 1020 | 5 | 1.02x |",
		"](plots/fig-api.png)", "](plots/fig-scaling.png)", "](plots/fig-docker_run.png)",
		"| vxbridge | 7.00 | 7.00, 7.00 | 0.875x (target **missed**) | 0.88x | 0.300 | 0.600 | 1.50x | 0 | 1450 | 2, 3 |",
		"| vxbridge | 0.0 | 0.0 | 5 of 5 | 3.0 | 6.0 |", "p50 met, p99 met; p50 met, p99 met |",
		"| docker overlay | 0.0 | 0.0 | 0 of 5 | 20.0 | 40.0 |", "p50 met, p99 met; p50 **missed**, p99 **missed** |",
		"| vxbridge | 18.0 s |", "| docker overlay | **not within 120 s** |",
		"_Measured 2026-01-02 03:04:05Z", "](plots/fig-crosshost.png)", "](plots/fig-convergence.png)",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	for _, f := range []string{"fig-api.png", "fig-scaling.png", "fig-docker_run.png", "fig-crosshost.png", "fig-crosshost_rtt.png", "fig-convergence.png"} {
		if st, err := os.Stat(filepath.Join(dir, "plots", f)); err != nil || st.Size() == 0 {
			t.Errorf("plot %s: %v", f, err)
		}
	}
}
