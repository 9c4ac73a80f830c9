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

// TestSimSection renders figure 6 with two designs: the targets are read
// at H=1000 3of20 on the observer with the most CPU, and the ratios are to
// the first design.
func TestSimSection(t *testing.T) {
	ms := func(v float64) result.Dist { return result.Dist{N: 5, P50Ms: v / 2, P99Ms: v, MaxMs: v} }
	calls := func(v float64) map[string]result.Dist {
		return map[string]result.Dist{"NetworkDriver.CreateEndpoint": ms(v), "NetworkDriver.Join": ms(v)}
	}
	obs := func(cpu, conv, join float64, rss int, foreign float64) []result.SimObserver {
		return []result.SimObserver{
			{Name: "obs0", CPUChurn: cpu, Converge: ms(conv), QuietCalls: calls(10), ChurnCalls: calls(join), RSSMaxKiB: rss,
				CompactBackMs: 900, ForeignBytesPerWrite: foreign, Remote: 100, FDB: 100, Neigh: 100},
			{Name: "obs1", CPUChurn: cpu / 2, Converge: ms(1), QuietCalls: calls(10), ChurnCalls: calls(10)},
		}
	}
	s := &result.Sim{PerHost: 50, Rate: 100, Observers: 2, Designs: []result.SimDesign{{Name: "before"}, {Name: "current"}},
		Points: []result.SimPoint{
			{Design: "before", Shape: "3of20", Hosts: 1000, EtcdNodes: 1, Observers: obs(0.8, 400, 30, 300<<10, 290)},
			{Design: "current", Shape: "3of20", Hosts: 1000, EtcdNodes: 1, Observers: obs(0.04, 40, 10.5, 50<<10, 0)},
			{Design: "current", Shape: "3of20", Hosts: 100, EtcdNodes: 1, Observers: obs(0.01, 20, 10, 40<<10, 0)},
		},
		Limits: []string{"before, 1of1, H=1000, etcd x1: too slow"}}
	var b strings.Builder
	simSection(&b, s, "plots/fig-sim.png", "")
	page := b.String()
	for _, want := range []string{
		"| before | 1000 | 0.800: **missed** | 400 ms: **missed** | 3.00x: **missed** | 3.00x: **missed** | 300.0 MiB: **missed** | 900 ms: met | 290: **missed** |",
		"| current | 1000 | 0.040: met | 40 ms: met | 1.05x: met | 1.05x: met | 50.0 MiB: met | 900 ms: met | 0: met |",
		"| current | 3of20 | 1000 | 1 | 0.05x | n/a | 0.10x | 0.35x | 0.17x | 1.00x | 0.00x |",
		"- before, 1of1, H=1000, etcd x1: too slow", "![figure 6, observer CPU](plots/fig-sim.png)",
		"| flannel model |", "| current | 3of20 | 1000 | 1 | obs0 | 100 |",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	if _, err := simCPUPlot(s); err != nil {
		t.Fatal(err)
	}
}
