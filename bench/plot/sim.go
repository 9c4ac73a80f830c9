package main

import (
	_ "embed"
	"fmt"
	"math"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"

	"github.com/vxbridge/vxbridge/bench/result"
)

// simAnalysis is the hand-written reading of figure 6.
//
//go:embed analysis_sim.md
var simAnalysis string

// Targets from issue 12, at 1000 hosts x 50 endpoints, each host in 3 of 20
// networks, 100 starts per second.
const (
	targetSimHosts      = 1000
	targetSimShape      = "3of20"
	targetSimCPU        = 0.05 // cores
	targetSimConvergeMs = 100.0
	targetSimCallRatio  = 1.10 // churn p99 over quiet p99
	targetSimRSSMiB     = 100.0
	targetSimRelistMs   = 2000.0
)

func simSection(b *strings.Builder, s *result.Sim, png, convPNG string) {
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	w("## Figure 6: cross-host networks at many hosts\n\n")
	w("One process (`bench/simhosts`) plays H synthetic vxbridge hosts against a real etcd (Debian's etcd-server in the ")
	w("underlay namespace, data on %s): each is a real `cluster.Client` of the design measured, with its own lease, host ", s.EtcdDataDir)
	w("record, network memberships, address blocks (vxbridge's IPAM block allocators) and %d endpoints, spread over its ", s.PerHost)
	w("networks. Cluster-wide they start %.0f containers per second and stop as many (each start replaces the host's %s ", s.Rate, s.Policy)
	w("endpoint). %d real plugins (the observers, on namespace hosts of the testbed) are members of networks like a ", s.Observers)
	w("synthetic host, with endpoints of their own, driven through their socket as dockerd drives them. Phases: quiet ")
	w("(%.0f s, the observers' own endpoint lifecycles only), churn (%.0f s, every network), foreign (%.0f s of churn in ", s.QuietSeconds, s.ChurnSeconds, s.ForeignSeconds)
	w("networks no observer is in, after an idle window), etcd restarted, and each observer cut off etcd while etcd ")
	w("compacted past it. %d synthetic hosts also watch the cluster.\n\n", s.SimWatchers)
	w("Designs, measured in the same run one after the other:")
	for _, d := range s.Designs {
		w(" **%s** (%s);", d.Name, d.What)
	}
	w(" each point below names its design. CPU is from /proc (user+system), in cores: 1.0 is one CPU busy; ")
	w("\"waiting\" is the scheduler's run delay of the process's threads in cores: CPU it wanted and the machine did not give it. ")
	w("**The machine's two CPUs are shared with etcd, the synthetic hosts and the harness: absolute CPU and latency ")
	w("are pessimistic, most of all at the largest sizes.**\n\n")
	w("Run it with `sudo make bench BENCH_FIGURES=6` (about an hour; `VXBRIDGE_BENCH_SHORT=1`: H=10 only, under two ")
	w("minutes). Knobs, as environment variables: `VXBRIDGE_BENCH_SIM_HOSTS` (10,100,300,1000), `_SHAPES` (3of20,1of1), ")
	w("`_PER_HOST` (50), `_RATE` (100), `_OBSERVERS` (1), `_CHURN_S` (30; quiet and foreign two thirds of it), `_WATCHERS` (0), ")
	w("`_ETCD3` (1: the largest H also on three etcd members), `_BEFORE` (the anchor's commit; `none`), `_ETCD_DIR` (/dev/shm), ")
	w("`_CACHE` (/var/tmp/vxbridge-bench: builds by commit), `_ONDEMAND` (1: also the checkout with on-demand programming), ")
	w("`_KEEP` (0; 1: keep the earlier results' points this run does not measure again, for a part of the sweep run again).\n\n")
	if s.Short {
		w("**Short run (VXBRIDGE_BENCH_SHORT): a smoke test of the harness, not numbers to keep.**\n\n")
	}
	simTargets(b, s)
	simCostTable(b, s)
	simLatencyTable(b, s)
	simFirstPacketTable(b, s)
	simClusterTable(b, s)
	if len(s.Limits) > 0 {
		w("Where the sweep stopped:\n\n")
		for _, l := range s.Limits {
			w("- %s\n", l)
		}
		w("\n")
	}
	image(b, png, "figure 6, observer CPU")
	image(b, convPNG, "figure 6, convergence")
}

// simKey names the rows of one observer at one point.
func simKey(p result.SimPoint, o result.SimObserver) string {
	return fmt.Sprintf("%s | %s | %d | %d | %s", p.Design, p.Shape, p.Hosts, p.EtcdNodes, o.Name)
}

const simKeyHead = "| design | shape | H | etcd | observer |"

func simCostTable(b *strings.Builder, s *result.Sim) {
	fmt.Fprintf(b, "Cost on the observer. Entries are what its VXLAN devices held after the churn settled; the anchors' ")
	fmt.Fprintf(b, "models for the same membership: flannel (vxlan backend) holds one route, one ARP and one FDB entry per ")
	fmt.Fprintf(b, "remote host of the cluster, docker's overlay an FDB and a neighbour entry per remote endpoint of its networks.\n\n")
	simTable(b, "remote endpoints | CPU quiet | CPU churn (waiting for a CPU) | ms CPU per remote change | RSS MiB (max) | FDB | neigh | flannel model | overlay model | joined in s (CreateNetwork s) |",
		"---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", s, func(p result.SimPoint, o result.SimObserver) string {
			return fmt.Sprintf("%d | %.3f | %.3f (%.3f) | %.2f | %.1f (%.1f) | %d | %d | %d | %d | %.1f (%.1f) |", o.Remote,
				o.CPUQuiet, o.CPUChurn, o.WaitChurn, o.CPUPerChangeMs, mib(o.RSSKiB), mib(o.RSSMaxKiB), o.FDB, o.Neigh,
				3*(p.Hosts+s.Observers-1), 2*o.Remote, o.InitialSyncMs/1000, o.CreateNetworkMs/1000)
		})
}

func simLatencyTable(b *strings.Builder, s *result.Sim) {
	fmt.Fprintf(b, "Latency on the observer. **converge**: a remote endpoint's commit in etcd (its writer's client ")
	fmt.Fprintf(b, "reporting it synced) to both its FDB and neighbour entries in the observer's kernel (netlink notifications ")
	fmt.Fprintf(b, "in the network's namespace); **gone**: the same for a withdrawal. **own calls**: the observer's own ")
	fmt.Fprintf(b, "CreateEndpoint and Join, p99 quiet -> churning. **back after**: from etcd healthy again (restart) or the ")
	fmt.Fprintf(b, "observer's underlay back (compaction; reconnect is when its connection to etcd was up again) until markers ")
	fmt.Fprintf(b, "written meanwhile were programmed, with the re-lists it logged.\n\n")
	simTable(b, "converge p50 / p99 ms | from Publish p99 | gone p50 / p99 ms | missed | CreateEndpoint p99 ms | Join p99 ms | back after restart ms (re-lists) | back after compaction ms (reconnect, re-lists) |",
		"---:|---:|---|---:|---:|---:|---:|---|---|---|---|", s, func(p result.SimPoint, o result.SimObserver) string {
			ce, cj := o.QuietCalls["NetworkDriver.CreateEndpoint"], o.QuietCalls["NetworkDriver.Join"]
			he, hj := o.ChurnCalls["NetworkDriver.CreateEndpoint"], o.ChurnCalls["NetworkDriver.Join"]
			return fmt.Sprintf("%.1f / %.1f | %.1f | %.1f / %.1f | %d + %d | %.1f -> %.1f | %.1f -> %.1f | %.0f (%d) | %.0f (%.0f, %d) |",
				o.Converge.P50Ms, o.Converge.P99Ms, o.FromPublish.P99Ms, o.Gone.P50Ms, o.Gone.P99Ms,
				o.Missed, o.GoneMissed, ce.P99Ms, he.P99Ms, cj.P99Ms, hj.P99Ms,
				o.RestartBackMs, o.RestartRelists, o.CompactBackMs, o.CompactReconnMs, o.CompactRelists)
		})
}

// simTable writes one row per observer of each point: simKeyHead's columns,
// then head's (align their separators); a row "" is left out.
func simTable(b *strings.Builder, head, align string, s *result.Sim, row func(result.SimPoint, result.SimObserver) string) {
	fmt.Fprintf(b, "%s %s\n|---|---|---:|---:|---|%s\n", simKeyHead, head, align)
	for _, p := range s.Points {
		for _, o := range p.Observers {
			if r := row(p, o); r != "" {
				fmt.Fprintf(b, "| %s | %s\n", simKey(p, o), r)
			}
		}
	}
	fmt.Fprintf(b, "\n")
}

func simFirstPacketTable(b *strings.Builder, s *result.Sim) {
	fmt.Fprintf(b, "First packet to a peer not talked to before, after the churn: for up to 20 live remote endpoints, an ARP ")
	fmt.Fprintf(b, "request from the network's bridge (what a container's first packet to the peer sends; `busybox arping`, ")
	fmt.Fprintf(b, "timed to its answer), then one datagram to the peer, timed until the VXLAN device had its FDB entry (0: it ")
	fmt.Fprintf(b, "had it already). FDB and neigh: what the VXLAN devices held after the churn, before these probes.\n\n")
	simTable(b, "ARP answered p50 / p99 ms | FDB after the first frame p50 / p99 ms | probes (failed) | FDB | neigh |",
		"---:|---:|---:|---:|---:|", s, func(_ result.SimPoint, o result.SimObserver) string {
			if o.FirstARP.N == 0 && o.FirstPacketFailed == 0 {
				return ""
			}
			return fmt.Sprintf("%.1f / %.1f | %.1f / %.1f | %d (%d) | %d | %d |", o.FirstARP.P50Ms, o.FirstARP.P99Ms,
				o.FirstFDB.P50Ms, o.FirstFDB.P99Ms, o.FirstARP.N, o.FirstPacketFailed, o.FDB, o.Neigh)
		})
}

func simClusterTable(b *strings.Builder, s *result.Sim) {
	fmt.Fprintf(b, "Foreign events and the cluster side. **foreign**: bytes the observer's underlay received per write in ")
	fmt.Fprintf(b, "networks it is not in, beyond its idle rate (0: it receives none), and its CPU then vs idle; etcd's events ")
	fmt.Fprintf(b, "sent per such write (to all watchers). etcd and the synthetic hosts in the churn phase; populate is the time ")
	fmt.Fprintf(b, "to bring the synthetic hosts up.\n\n")
	fmt.Fprintf(b, "| design | shape | H | etcd | endpoints | populate s | foreign bytes/write (per observer) | observer CPU foreign / idle | etcd events/write foreign | etcd events/s | etcd sent MB/s | watchers | keys | db MiB | etcd CPU (waiting) | etcd RSS MiB | etcd fds | publish->commit p50 / p99 ms | simhosts CPU | simhosts RSS MiB | machine busy |\n")
	fmt.Fprintf(b, "|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|\n")
	for _, p := range s.Points {
		var fb, fc []string
		for _, o := range p.Observers {
			fb = append(fb, fmt.Sprintf("%.0f", o.ForeignBytesPerWrite))
			fc = append(fc, fmt.Sprintf("%.3f / %.3f", o.CPUForeign, o.CPUIdle))
		}
		e := p.Etcd
		fmt.Fprintf(b, "| %s | %s | %d | %d | %d | %.1f | %s | %s | %.2f | %.0f | %.2f | %d | %d | %.1f | %.2f (%.2f) | %.0f | %d | %.1f / %.1f | %.2f | %.0f | %.2f |\n",
			p.Design, p.Shape, p.Hosts, p.EtcdNodes, p.Endpoints, p.PopulateSeconds, strings.Join(fb, ", "), strings.Join(fc, ", "),
			e.ForeignEventsPerWrite, e.EventsPerSecond, e.SentBytesPerSec/1e6, e.Watchers, e.Keys, float64(e.DBBytes)/(1<<20), e.CPU, e.Wait, mib(e.RSSKiB), e.FDs,
			p.Churn.Commit.P50Ms, p.Churn.Commit.P99Ms, p.SimCPU, mib(p.SimRSSKiB), p.MachineBusy)
	}
	fmt.Fprintf(b, "\n")
}

func mib(kib int) float64 { return float64(kib) / 1024 }

// simWorst is the point's observer with the most CPU in the churn: the
// targets hold for every observer or not at all.
func simWorst(p result.SimPoint) (result.SimObserver, bool) {
	if len(p.Observers) == 0 {
		return result.SimObserver{}, false
	}
	return slices.MaxFunc(p.Observers, func(a, b result.SimObserver) int {
		return cmpFloat(a.CPUChurn, b.CPUChurn)
	}), true
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// simTarget is the point the targets are read at for a design: H=1000 in
// the 3of20 shape on one etcd member, or the largest of that shape run.
func simTarget(s *result.Sim, design string) (result.SimPoint, bool) {
	var best result.SimPoint
	found := false
	for _, p := range s.Points {
		if p.Design != design || p.Shape != targetSimShape || p.EtcdNodes != 1 || len(p.Observers) == 0 {
			continue
		}
		if !found || p.Hosts > best.Hosts {
			best, found = p, true
		}
	}
	return best, found
}

// callRatio is the churning p99 of a call over its quiet p99.
func callRatio(o result.SimObserver, call string) float64 {
	q := o.QuietCalls[call].P99Ms
	if q <= 0 {
		return math.NaN()
	}
	return o.ChurnCalls[call].P99Ms / q
}

func simTargets(b *strings.Builder, s *result.Sim) {
	fmt.Fprintf(b, "Targets (issue 12) at %d hosts x %d endpoints, each host in 3 of 20 networks, %.0f starts/s, read on the ", targetSimHosts, s.PerHost, s.Rate)
	fmt.Fprintf(b, "observer that spent the most CPU; a design whose sweep stopped short is read at its largest size, named.\n\n")
	fmt.Fprintf(b, "| design | at H | CPU churning (< %.2f cores) | converge p99 (< %.0f ms) | CreateEndpoint p99 churn/quiet (< %.2fx) | Join p99 churn/quiet (< %.2fx) | RSS max (< %.0f MiB) | re-list after compaction (< %.0f ms) | foreign bytes/write (0) |\n",
		targetSimCPU, targetSimConvergeMs, targetSimCallRatio, targetSimCallRatio, targetSimRSSMiB, targetSimRelistMs)
	fmt.Fprintf(b, "|---|---:|---|---|---|---|---|---|---|\n")
	for _, d := range s.Designs {
		p, ok := simTarget(s, d.Name)
		o, ok2 := simWorst(p)
		if !ok || !ok2 {
			fmt.Fprintf(b, "| %s | not measured | | | | | | | |\n", d.Name)
			continue
		}
		ce, cj := callRatio(o, "NetworkDriver.CreateEndpoint"), callRatio(o, "NetworkDriver.Join")
		fmt.Fprintf(b, "| %s | %d | %.3f: %s | %.0f ms: %s | %.2fx: %s | %.2fx: %s | %.1f MiB: %s | %.0f ms: %s | %.0f: %s |\n",
			d.Name, p.Hosts, o.CPUChurn, verdict(o.CPUChurn < targetSimCPU), o.Converge.P99Ms, verdict(o.Converge.P99Ms < targetSimConvergeMs),
			ce, verdict(ce < targetSimCallRatio), cj, verdict(cj < targetSimCallRatio), mib(o.RSSMaxKiB), verdict(mib(o.RSSMaxKiB) < targetSimRSSMiB),
			o.CompactBackMs, verdict(o.CompactBackMs > 0 && o.CompactBackMs < targetSimRelistMs), o.ForeignBytesPerWrite, verdict(o.ForeignBytesPerWrite < 1))
	}
	fmt.Fprintf(b, "\n")
	simRatios(b, s)
}

// simRatios compares the designs point by point (the first design is the
// anchor), on the observer with the most CPU.
func simRatios(b *strings.Builder, s *result.Sim) {
	if len(s.Designs) < 2 {
		fmt.Fprintf(b, "One design in this run: no ratios (pin the \"before\" commit, see bench/sim.go, to measure one).\n\n")
		return
	}
	anchor := s.Designs[0].Name
	type key struct {
		shape        string
		hosts, nodes int
	}
	base := map[key]result.SimObserver{}
	for _, p := range s.Points {
		if o, ok := simWorst(p); ok && p.Design == anchor {
			base[key{p.Shape, p.Hosts, p.EtcdNodes}] = o
		}
	}
	fmt.Fprintf(b, "Ratios to **%s**, same run, same point: below 1.00x is better.\n\n", anchor)
	fmt.Fprintf(b, "| design | shape | H | etcd | CPU churning | ms CPU per remote change | converge p99 | Join p99 churning | RSS max | back after compaction | foreign bytes/write |\n")
	fmt.Fprintf(b, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range s.Points {
		a, ok := base[key{p.Shape, p.Hosts, p.EtcdNodes}]
		o, ok2 := simWorst(p)
		if p.Design == anchor || !ok || !ok2 {
			continue
		}
		fmt.Fprintf(b, "| %s | %s | %d | %d | %s | %s | %s | %s | %s | %s | %s |\n", p.Design, p.Shape, p.Hosts, p.EtcdNodes,
			ratioOf(o.CPUChurn, a.CPUChurn), ratioOf(o.CPUPerChangeMs, a.CPUPerChangeMs), ratioOf(o.Converge.P99Ms, a.Converge.P99Ms),
			ratioOf(o.ChurnCalls["NetworkDriver.Join"].P99Ms, a.ChurnCalls["NetworkDriver.Join"].P99Ms),
			ratioOf(float64(o.RSSMaxKiB), float64(a.RSSMaxKiB)), ratioOf(o.CompactBackMs, a.CompactBackMs),
			ratioOf(o.ForeignBytesPerWrite, a.ForeignBytesPerWrite))
	}
	fmt.Fprintf(b, "\n")
}

// simSeries is one line of a figure 6 plot: a design and shape on one
// etcd member, by H.
type simSeries struct {
	name string
	pts  plotter.XYs
}

func simLines(s *result.Sim, y func(result.SimObserver) float64) []simSeries {
	var out []simSeries
	idx := map[string]int{}
	for _, p := range s.Points {
		o, ok := simWorst(p)
		if !ok || p.EtcdNodes != 1 || p.Limit != "" || math.IsNaN(y(o)) {
			continue
		}
		name := p.Design + " " + p.Shape
		i, seen := idx[name]
		if !seen {
			i = len(out)
			idx[name] = i
			out = append(out, simSeries{name: name})
		}
		out[i].pts = append(out[i].pts, plotter.XY{X: float64(p.Hosts), Y: y(o)})
	}
	return out
}

// simPlot draws y against H (log scale) for each design and shape.
func simPlot(s *result.Sim, title, ylabel string, y func(result.SimObserver) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "synthetic hosts H (log scale)"
	p.Y.Label.Text = ylabel
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	for i, l := range simLines(s, y) {
		line, points, err := plotter.NewLinePoints(l.pts)
		if err != nil {
			return nil, err
		}
		line.Color, points.Color = plotutil.Color(i), plotutil.Color(i)
		line.Dashes = plotutil.Dashes(i)
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		p.Legend.Add(l.name, line, points)
	}
	p.Legend.Top, p.Legend.Left = true, true
	p.Y.Min = 0
	return p, nil
}

func simCPUPlot(s *result.Sim) (*plot.Plot, error) {
	return simPlot(s, fmt.Sprintf("Figure 6: observer CPU while the cluster churns (%.0f starts/s)", s.Rate), "cores (CPU s per s)",
		func(o result.SimObserver) float64 { return o.CPUChurn })
}

func simConvergePlot(s *result.Sim) (*plot.Plot, error) {
	return simPlot(s, "Figure 6: convergence p99, commit in etcd to the observer's kernel", "ms",
		func(o result.SimObserver) float64 {
			if o.Converge.N == 0 {
				return math.NaN() // nothing converged in the phase
			}
			return o.Converge.P99Ms
		})
}
