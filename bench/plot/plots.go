package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/vxbridge/vxbridge/bench/result"
)

// writePlots writes one PNG per measured figure and returns their paths by
// figure ("api", "scaling", "docker_run").
func writePlots(r *result.Run, dir string) (map[string]string, error) {
	out := map[string]string{}
	type fig struct {
		key   string
		make  func() (*plot.Plot, error)
		width vg.Length // default 7 inches
	}
	var figs []fig
	if r.API != nil {
		figs = append(figs, fig{"api", func() (*plot.Plot, error) { return apiPlot(r.API) }, 0})
	}
	if r.Scaling != nil && len(r.Scaling.CreateMs) > 0 {
		figs = append(figs, fig{"scaling", func() (*plot.Plot, error) { return scalingPlot(r.Scaling) }, 0})
	}
	if r.DockerRun != nil && len(r.DockerRun.Networks) > 0 {
		figs = append(figs, fig{"docker_run", func() (*plot.Plot, error) { return dockerRunPlot(r.DockerRun) }, 0})
	}
	if r.CrossHost != nil && len(r.CrossHost.Paths) > 0 {
		figs = append(figs, fig{"crosshost", func() (*plot.Plot, error) { return crossHostPlot(r.CrossHost) }, 9 * vg.Inch},
			fig{"crosshost_rtt", func() (*plot.Plot, error) { return crossHostRTTPlot(r.CrossHost) }, 9 * vg.Inch})
	}
	if r.Convergence != nil && len(r.Convergence.Drivers) > 0 {
		figs = append(figs, fig{"convergence", func() (*plot.Plot, error) { return convergencePlot(r.Convergence) }, 0})
	}
	if r.Sim != nil && len(r.Sim.Points) > 0 {
		figs = append(figs, fig{"sim", func() (*plot.Plot, error) { return simCPUPlot(r.Sim) }, 0},
			fig{"sim_converge", func() (*plot.Plot, error) { return simConvergePlot(r.Sim) }, 0})
	}
	for _, f := range figs {
		p, err := f.make()
		if err != nil {
			return nil, fmt.Errorf("plot %s: %w", f.key, err)
		}
		path := filepath.Join(dir, "fig-"+f.key+".png")
		w := f.width
		if w == 0 {
			w = 7 * vg.Inch
		}
		if err := p.Save(w, 4*vg.Inch, path); err != nil {
			return nil, fmt.Errorf("save %s: %w", path, err)
		}
		out[f.key] = path
	}
	return out, nil
}

// apiPlot: lifecycles per second per client count, beside the kernel floor.
func apiPlot(a *result.API) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Figure 2: endpoint lifecycles/s on the socket (median of rounds)"
	p.Y.Label.Text = "lifecycles/s"
	var vals plotter.Values
	var names []string
	for _, r := range a.Runs {
		vals = append(vals, r.PerSecond)
		names = append(names, fmt.Sprintf("vxbridge\n%d client(s)", r.Clients))
	}
	for _, an := range a.Anchors {
		switch {
		case an.Name == "kernel":
			vals = append(vals, an.PerSecond)
			names = append(names, "raw kernel (netlink)\n1 client")
		case strings.HasPrefix(an.Name, "kernel floor"):
			vals = append(vals, an.PerSecond)
			names = append(names, "kernel floor\n(batched deletes, x8)")
		}
	}
	return bars(p, names, vals)
}

// padNominal leaves half a slot of room left and right of the outer bars
// (their labels are centred on them and were clipped at the edge) and a
// tenth above the highest.
func padNominal(p *plot.Plot, n int) {
	p.X.Min, p.X.Max = -0.6, float64(n)-0.4
	p.Y.Min = 0
	p.Y.Max *= 1.1
}

// scalingPlot: time to add the Nth endpoint, and probe lifecycle medians.
func scalingPlot(s *result.Scaling) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Figure 3: latency vs endpoints on one network"
	p.X.Label.Text = "N (endpoints on the network)"
	p.Y.Label.Text = "ms"
	pts := make(plotter.XYs, len(s.CreateMs))
	for i, ms := range s.CreateMs {
		pts[i].X, pts[i].Y = float64(i+1), ms
	}
	sc, err := plotter.NewScatter(pts)
	if err != nil {
		return nil, err
	}
	sc.GlyphStyle.Radius = vg.Points(1)
	probes := make(plotter.XYs, len(s.Probes))
	for i, pr := range s.Probes {
		probes[i].X, probes[i].Y = float64(pr.Fill), pr.Latency.P50Ms
	}
	line, err := plotter.NewLine(probes)
	if err != nil {
		return nil, err
	}
	line.Width = vg.Points(2)
	p.Add(sc, line)
	p.Legend.Add("add endpoint N (RequestAddress+CreateEndpoint+Join)", sc)
	p.Legend.Add("full lifecycle at fill N, median", line)
	p.Legend.Top = true
	// A few multi-100 ms outliers (a loaded machine) would flatten the
	// rest: cap the axis at twice the p99 and say so.
	ymax := 2 * max(result.SummariseMs(s.CreateMs).P99Ms, lastProbe(s))
	p.Y.Min, p.Y.Max = 0, ymax
	p.Y.Label.Text = fmt.Sprintf("ms (axis capped at %.0f)", ymax)
	return p, nil
}

// dockerRunPlot: docker run wall time per --network, as ratio to the anchor.
func dockerRunPlot(d *result.DockerRun) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Figure 1: docker run --rm --network X true, median wall time"
	p.Y.Label.Text = "ms"
	var vals plotter.Values
	var names []string
	for _, n := range d.Networks {
		vals = append(vals, n.Latency.P50Ms)
		names = append(names, fmt.Sprintf("%s (%.2fx)", n.Network, n.Ratio))
	}
	return bars(p, names, vals)
}

func lastProbe(s *result.Scaling) float64 {
	if len(s.Probes) == 0 {
		return 0
	}
	return s.Probes[len(s.Probes)-1].Latency.P99Ms
}

// crossHostPlot: median TCP throughput per path, with the ratio to the
// anchor.
func crossHostPlot(c *result.CrossHost) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Figure 4: TCP throughput host B to A, median of %d rounds, ratio to %s", c.Rounds, c.Anchor)
	p.Y.Label.Text = "Gbit/s (iperf3, one stream)"
	var vals plotter.Values
	var names []string
	for _, x := range c.Paths {
		vals = append(vals, x.Gbps)
		names = append(names, fmt.Sprintf("%s\n%.3fx", wrapWords(x.Name), x.GbpsRatio))
	}
	return bars(p, names, vals)
}

// crossHostRTTPlot: ping round trip p50 and p99 per path.
func crossHostRTTPlot(c *result.CrossHost) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Figure 4: ping round trip host B to A, p50 and p99 of all rounds"
	p.Y.Label.Text = "ms"
	var p50, p99 plotter.Values
	var names []string
	for _, x := range c.Paths {
		p50 = append(p50, x.RTT.P50Ms)
		p99 = append(p99, x.RTT.P99Ms)
		names = append(names, wrapWords(x.Name))
	}
	return groupedBars(p, names, []string{"p50", "p99"}, p50, p99)
}

// convergencePlot: per driver, medians counted from the start of docker
// run -d on A: B's FDB programmed, the container answering on A, answering
// B, and docker run returning.
func convergencePlot(c *result.Convergence) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Figure 5: after docker run -d starts on A, medians of %d starts", c.Starts)
	p.Y.Label.Text = "ms since docker run -d started"
	var names []string
	var prog, local, remote, ret plotter.Values
	for _, d := range c.Drivers {
		names = append(names, d.Driver)
		prog = append(prog, d.Programmed.P50Ms)
		local = append(local, d.LocalFromRunStart.P50Ms)
		remote = append(remote, d.FromRunStart.P50Ms)
		ret = append(ret, d.Run.P50Ms)
	}
	return groupedBars(p, names, []string{"B's FDB programmed", "answers on A", "answers B", "docker run returned"},
		prog, local, remote, ret)
}

// bars puts one bar per name.
func bars(p *plot.Plot, names []string, vals plotter.Values) (*plot.Plot, error) {
	b, err := plotter.NewBarChart(vals, vg.Points(40))
	if err != nil {
		return nil, err
	}
	p.Add(b)
	p.NominalX(names...)
	padNominal(p, len(names))
	return p, nil
}

// groupedBars puts one bar per series side by side in each group.
func groupedBars(p *plot.Plot, groups, series []string, vals ...plotter.Values) (*plot.Plot, error) {
	w := vg.Points(18)
	for i, v := range vals {
		bars, err := plotter.NewBarChart(v, w)
		if err != nil {
			return nil, err
		}
		bars.Offset = w * vg.Length(2*i-len(vals)+1) / 2
		bars.Color = plotutil.Color(i)
		bars.LineStyle.Width = 0
		p.Add(bars)
		p.Legend.Add(series[i], bars)
	}
	p.Legend.Top = true
	p.NominalX(groups...)
	padNominal(p, len(groups))
	p.Y.Max *= 1.15 // room for the legend
	return p, nil
}

// wrapWords puts each word of a bar label on its own line, so many bars
// side by side keep their labels apart.
func wrapWords(s string) string { return strings.Join(strings.Fields(s), "\n") }
