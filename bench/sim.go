package bench

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/bench/result"
	"github.com/vxbridge/vxbridge/bench/sim"
)

// SimBeforeCommit is the "before" anchor of figure 6: the design the
// current one is measured against, built from this commit in the same run.
// Empty: the checkout alone is measured. VXBRIDGE_BENCH_SIM_BEFORE
// overrides it ("none" turns it off).
const SimBeforeCommit = "2bd4a2b0b78869a4905fa0b1613c72bc3a63a726"

// SimOptions sizes figure 6.
type SimOptions struct {
	Hosts     []int    // the sweep of synthetic hosts
	Shapes    []string // membership shapes, sim.ParseShape
	PerHost   int      // endpoints per synthetic host
	Rate      float64  // container starts per second cluster-wide (and as many stops)
	Policy    string   // lifetime policy of simhosts -stop
	Observers int      // real plugins, 1 to 3
	OwnPerNet int      // each observer's own endpoints per network
	Quiet     time.Duration
	Churn     time.Duration
	Foreign   time.Duration
	// Etcd3 also runs the largest H of the sweep on a three-member etcd.
	Etcd3    bool
	Watchers int  // synthetic hosts that also watch the cluster
	OnDemand bool // also the checkout with peers programmed on demand
	// Keep completes this run's points with the earlier results' others
	// (a part of the sweep run again, or added).
	Keep    bool
	Before  string // commit of the "before" design; "" none
	EtcdDir string // etcd's data (tmpfs by default)
	Cache   string // builds of other commits, by hash
	Short   bool
}

// SimOptionsFromEnv is figure 6's sizing: the full sweep, or with short a
// smoke run of H=10 (under two minutes; its numbers are not worth
// keeping). VXBRIDGE_BENCH_SIM_* variables override each knob (see
// BENCHMARKS.md, figure 6).
func SimOptionsFromEnv(short bool) (SimOptions, error) {
	o := SimOptions{Hosts: []int{10, 100, 300, 1000}, Shapes: []string{"3of20", "1of1"}, PerHost: 50, Rate: 100,
		Policy: "oldest", Observers: 1, OwnPerNet: 5, Quiet: 20 * time.Second, Churn: 30 * time.Second,
		Foreign: 20 * time.Second, Etcd3: true, OnDemand: true, Before: SimBeforeCommit, EtcdDir: "/dev/shm",
		Cache: "/var/tmp/vxbridge-bench", Short: short}
	if short {
		o.Hosts, o.Shapes, o.Observers, o.Etcd3 = []int{10}, []string{"3of20"}, 1, false
		o.Quiet, o.Churn, o.Foreign = 5*time.Second, 8*time.Second, 5*time.Second
	}
	if !fileExists(o.EtcdDir) {
		o.EtcdDir = os.TempDir()
	}
	env := func(k string) (string, bool) { v := os.Getenv("VXBRIDGE_BENCH_SIM_" + k); return v, v != "" }
	var err error
	if v, ok := env("HOSTS"); ok {
		if o.Hosts, err = parseInts(v); err != nil {
			return o, fmt.Errorf("VXBRIDGE_BENCH_SIM_HOSTS: %w", err)
		}
	}
	if v, ok := env("SHAPES"); ok {
		o.Shapes = strings.Split(v, ",")
	}
	for _, s := range o.Shapes {
		if _, err := sim.ParseShape(s); err != nil {
			return o, fmt.Errorf("VXBRIDGE_BENCH_SIM_SHAPES: %w", err)
		}
	}
	if err := envNumbers(env, &o); err != nil {
		return o, err
	}
	if v, ok := env("BEFORE"); ok {
		o.Before = strings.TrimPrefix(v, "none")
	}
	if v, ok := env("ETCD_DIR"); ok {
		o.EtcdDir = v
	}
	if v, ok := env("CACHE"); ok {
		o.Cache = v
	}
	if o.Observers < 1 || o.Observers > 3 {
		return o, fmt.Errorf("VXBRIDGE_BENCH_SIM_OBSERVERS=%d: want 1 to 3", o.Observers)
	}
	return o, nil
}

// envNumbers reads the numeric knobs.
func envNumbers(env func(string) (string, bool), o *SimOptions) error {
	ints := map[string]*int{"PER_HOST": &o.PerHost, "OBSERVERS": &o.Observers, "WATCHERS": &o.Watchers}
	for k, p := range ints {
		if v, ok := env(k); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("VXBRIDGE_BENCH_SIM_%s=%q: want a count", k, v)
			}
			*p = n
		}
	}
	if v, ok := env("RATE"); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			return fmt.Errorf("VXBRIDGE_BENCH_SIM_RATE=%q: want starts per second above 0", v)
		}
		o.Rate = f
	}
	if v, ok := env("CHURN_S"); ok {
		s, err := strconv.ParseFloat(v, 64)
		if err != nil || s <= 0 {
			return fmt.Errorf("VXBRIDGE_BENCH_SIM_CHURN_S=%q: want seconds above 0", v)
		}
		o.Churn = time.Duration(s * float64(time.Second))
		o.Quiet, o.Foreign = max(o.Churn*2/3, 5*time.Second), max(o.Churn*2/3, 5*time.Second)
	}
	if v, ok := env("ETCD3"); ok {
		o.Etcd3 = v != "0"
	}
	if v, ok := env("ONDEMAND"); ok {
		o.OnDemand = v != "0"
	}
	if v, ok := env("KEEP"); ok {
		o.Keep = v != "0"
	}
	return nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q: want positive counts, comma-separated", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// BenchSim runs figure 6: for each size of the sweep, each shape, each etcd
// (one member; three at the largest size) and each design, one point. A
// design that hits a limit at one size is not run at larger ones in that
// shape (the other etcd at the same size still runs).
func BenchSim(t *testing.T, bin string, o SimOptions) *result.Sim {
	designs := []simDesign{currentDesign(t, bin)}
	if o.OnDemand {
		designs = append(designs, onDemandDesign(designs[0]))
	}
	if o.Before != "" {
		designs = append([]simDesign{designAt(t, designBefore, o.Before, o.Cache)}, designs...)
	}
	out := &result.Sim{PerHost: o.PerHost, Rate: o.Rate, Policy: o.Policy, Observers: o.Observers,
		QuietSeconds: o.Quiet.Seconds(), ChurnSeconds: o.Churn.Seconds(), ForeignSeconds: o.Foreign.Seconds(),
		SimWatchers: o.Watchers, EtcdDataDir: o.EtcdDir, Short: o.Short}
	for _, d := range designs {
		out.Designs = append(out.Designs, d.SimDesign)
	}
	stoppedAt := map[string]int{} // design/shape -> the size it reached a limit at
	for _, hosts := range o.Hosts {
		for _, shape := range o.Shapes {
			for _, members := range etcdSizes(o, hosts) {
				for _, d := range designs {
					key := d.Name + "/" + shape
					if at, ok := stoppedAt[key]; ok && hosts > at {
						continue
					}
					pt := runPoint(t, o, d, shape, hosts, members)
					out.Points = append(out.Points, pt)
					where := pt.Where()
					switch {
					case pt.Limit != "":
						stoppedAt[key] = hosts
						out.Limits = append(out.Limits, where+": "+pt.Limit+" (larger sizes not run)")
					case pt.Ended != "":
						out.Limits = append(out.Limits, where+": ended after the churn: "+pt.Ended)
					}
				}
			}
		}
	}
	return out
}

// etcdSizes is the etcd member counts to run at hosts: one, and three at
// the largest size of the sweep.
func etcdSizes(o SimOptions, hosts int) []int {
	if o.Etcd3 && hosts == slices.Max(o.Hosts) {
		return []int{1, 3}
	}
	return []int{1}
}

// runPoint runs one point as a subtest (its namespaces, processes and
// files go when it ends); a failed subtest is a point with its Limit saying
// so, and the sweep goes on.
func runPoint(t *testing.T, o SimOptions, d simDesign, shape string, hosts, members int) result.SimPoint {
	pt := result.SimPoint{Design: d.Name, Shape: shape, Hosts: hosts, EtcdNodes: members}
	name := fmt.Sprintf("%s/%s/H%d/etcd%d", d.Name, shape, hosts, members)
	begin := time.Now()
	ok := t.Run(name, func(t *testing.T) {
		p := newSimPoint(t, o, d, shape, hosts, members)
		defer func() { pt = p.res }() // what was measured before a failure too
		p.run()
	})
	if !ok && pt.Limit == "" {
		pt.Limit = "the harness failed (see the test log)"
	}
	t.Logf("%s: done in %v", name, time.Since(begin).Round(time.Second))
	return pt
}
