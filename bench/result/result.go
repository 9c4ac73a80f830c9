// Package result is the machine-readable form of a `make bench` run
// (bench/results/results.json) and the statistics the harness and the
// report generator share. It is pure: no kernel, no clock.
package result

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"time"
)

// Run is one `make bench` run. Every figure carries its own anchor, measured
// in the same run and interleaved with it, so ratios survive a shared,
// drifting machine even when absolute times do not.
type Run struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Machine  Machine   `json:"machine"`

	API         *API         `json:"api,omitempty"`         // figure 2
	Scaling     *Scaling     `json:"scaling,omitempty"`     // figure 3
	DockerRun   *DockerRun   `json:"docker_run,omitempty"`  // figure 1
	CrossHost   *CrossHost   `json:"cross_host,omitempty"`  // figure 4
	Convergence *Convergence `json:"convergence,omitempty"` // figure 5
	Sim         *Sim         `json:"sim,omitempty"`         // figure 6

	// Measured says when each figure present was measured, by figure key
	// ("docker_run", "api", "scaling", "cross_host", "convergence", "sim"): a run
	// of some figures keeps the others from earlier runs (see Merge).
	Measured map[string]Measurement `json:"measured,omitempty"`
}

// Measurement is when one figure was measured and how loaded the machine
// was then.
type Measurement struct {
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished"`
	LoadBefore string    `json:"load_before"`
	LoadAfter  string    `json:"load_after"`
}

// Machine says where the numbers come from; load averages bracket the run.
type Machine struct {
	CPUs       int    `json:"cpus"`
	Kernel     string `json:"kernel"`
	GoVersion  string `json:"go_version"`
	Docker     string `json:"docker,omitempty"`
	LoadBefore string `json:"load_before"`
	LoadAfter  string `json:"load_after"`
}

// Dist summarises a set of durations in milliseconds.
type Dist struct {
	N      int     `json:"n"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MeanMs float64 `json:"mean_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// API is figure 2: full endpoint lifecycles straight on the plugin socket.
type API struct {
	Rounds int `json:"rounds"`
	// PerRound lifecycles per client count per round.
	PerRound int         `json:"lifecycles_per_round"`
	Runs     []APIRun    `json:"runs"`
	Anchors  []APIAnchor `json:"anchors"`
}

// APIRun is one client count, over all rounds.
type APIRun struct {
	Clients int `json:"clients"`
	// PerSecond is the median over rounds of lifecycles per second.
	PerSecond       float64         `json:"lifecycles_per_second"`
	PerSecondRounds []float64       `json:"lifecycles_per_second_rounds"`
	Lifecycle       Dist            `json:"lifecycle"` // one lifecycle's latency, all rounds pooled
	Calls           map[string]Dist `json:"calls"`     // per plugin call
	Errors          int             `json:"errors"`
	// PluginCPUMsPerLifecycle is the plugin's user+system CPU time (from
	// /proc/PID/stat) per lifecycle: far below the lifecycle's wall time
	// means the plugin waits (kernel, disk, its lock), not computes.
	PluginCPUMsPerLifecycle float64 `json:"plugin_cpu_ms_per_lifecycle"`
	// MachineCPUMsPerLifecycle is the whole machine's busy CPU time (all
	// CPUs, /proc/stat: the plugin, the bench's clients, the kernel's
	// threads and interrupts) per lifecycle.
	MachineCPUMsPerLifecycle float64 `json:"machine_cpu_ms_per_lifecycle,omitempty"`
}

// APIAnchor is a floor measured in the same rounds: the bare HTTP round trip
// on the same socket, or the raw kernel work of an endpoint done directly
// over netlink in the same namespace.
type APIAnchor struct {
	Name      string  `json:"name"`
	What      string  `json:"what"`
	PerSecond float64 `json:"per_second"` // median over rounds, one client
	Latency   Dist    `json:"latency"`
	// Steps splits the kernel anchor by netlink call.
	Steps map[string]Dist `json:"steps,omitempty"`
	// MachineCPUMsPerLifecycle is as in APIRun (the kernel floor only).
	MachineCPUMsPerLifecycle float64 `json:"machine_cpu_ms_per_lifecycle,omitempty"`
}

// Scaling is figure 3: one network filled to Endpoints endpoints.
type Scaling struct {
	Endpoints int `json:"endpoints"`
	// CreateMs[i] is the time to add endpoint i+1 (RequestAddress,
	// CreateEndpoint, Join) while i endpoints exist.
	CreateMs []float64 `json:"create_ms"`
	// Probes are full lifecycles run at a fill level (median of several).
	Probes []Probe `json:"probes"`
	// Restart-to-ready: SIGTERM, start, until Plugin.Activate answers (the
	// plugin reconciles before it listens), empty store vs full store.
	ReadyEmpty Dist `json:"ready_empty"`
	ReadyFull  Dist `json:"ready_full"`
	// Resident memory (VmRSS) of the plugin.
	RSSEmptyKiB        int `json:"rss_empty_kib"`
	RSSFullKiB         int `json:"rss_full_kib"`
	RSSAfterRestartKiB int `json:"rss_full_after_restart_kib"`
}

// Probe is the latency of full lifecycles with Fill endpoints present.
type Probe struct {
	Fill    int  `json:"fill"`
	Latency Dist `json:"latency"`
	// KernelAdd and KernelDel are the kernel anchor at this fill level: a
	// veth pair created up on the network's own bridge, then deleted, over
	// netlink with no plugin in the way.
	KernelAdd Dist `json:"kernel_add"`
	KernelDel Dist `json:"kernel_del"`
}

// DockerRun is figure 1: `docker run --rm --network X image true`.
type DockerRun struct {
	Rounds   int            `json:"rounds"`
	Networks []DockerRunNet `json:"networks"`
}

// DockerRunNet is one --network value over all rounds.
type DockerRunNet struct {
	Network string  `json:"network"` // "none", "bridge (docker)", "vxbridge"
	Latency Dist    `json:"latency"`
	Ratio   float64 `json:"ratio_vs_anchor"` // median / median of the anchor
	Anchor  string  `json:"anchor"`
}

// Summarise computes a Dist of durations.
func Summarise(ds []time.Duration) Dist {
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	return SummariseMs(ms)
}

// SummariseMs computes a Dist of milliseconds.
func SummariseMs(ms []float64) Dist {
	if len(ms) == 0 {
		return Dist{}
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	var sum float64
	for _, v := range s {
		sum += v
	}
	return Dist{N: len(s), P50Ms: Quantile(s, 0.5), P99Ms: Quantile(s, 0.99),
		MeanMs: sum / float64(len(s)), MaxMs: s[len(s)-1]}
}

// Quantile of sorted values, by the nearest-rank method (it never invents a
// value that was not measured).
func Quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Median of unsorted values.
func Median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return Quantile(s, 0.5)
}

// Read loads a results file.
func Read(path string) (*Run, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Run
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	return &r, nil
}

// Write stores a results file.
func (r *Run) Write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Figure keys, in page order, as used in Run.Measured.
const (
	KeyDockerRun   = "docker_run"
	KeyAPI         = "api"
	KeyScaling     = "scaling"
	KeyCrossHost   = "cross_host"
	KeyConvergence = "convergence"
	KeySim         = "sim"
)

// Keys lists the figure keys in page order.
var Keys = []string{KeyDockerRun, KeyAPI, KeyScaling, KeyCrossHost, KeyConvergence, KeySim}

// Has reports whether the run holds the figure key.
func (r *Run) Has(key string) bool {
	switch key {
	case KeyDockerRun:
		return r.DockerRun != nil
	case KeyAPI:
		return r.API != nil
	case KeyScaling:
		return r.Scaling != nil
	case KeyCrossHost:
		return r.CrossHost != nil
	case KeyConvergence:
		return r.Convergence != nil
	case KeySim:
		return r.Sim != nil
	}
	return false
}

func (r *Run) take(key string, from *Run) {
	switch key {
	case KeyDockerRun:
		r.DockerRun = from.DockerRun
	case KeyAPI:
		r.API = from.API
	case KeyScaling:
		r.Scaling = from.Scaling
	case KeyCrossHost:
		r.CrossHost = from.CrossHost
	case KeyConvergence:
		r.Convergence = from.Convergence
	case KeySim:
		r.Sim = from.Sim
	}
}

// When is when the figure was measured: its own record, or for a results
// file older than those records the whole run's times.
func (r *Run) When(key string) Measurement {
	if m, ok := r.Measured[key]; ok {
		return m
	}
	return Measurement{Started: r.Started, Finished: r.Finished,
		LoadBefore: r.Machine.LoadBefore, LoadAfter: r.Machine.LoadAfter}
}

// Keep copies into r every figure of prev that r did not measure, with
// when it was measured, so a run of some figures keeps the rest of the
// results file.
func (r *Run) Keep(prev *Run) {
	if prev == nil {
		return
	}
	for _, k := range Keys {
		if r.Has(k) || !prev.Has(k) {
			continue
		}
		r.take(k, prev)
		if r.Measured == nil {
			r.Measured = map[string]Measurement{}
		}
		r.Measured[k] = prev.When(k)
	}
}
