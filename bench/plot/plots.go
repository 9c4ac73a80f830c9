package main

import (
	"fmt"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/vxbridge/vxbridge/bench/result"
)

// writePlots writes one PNG per measured figure and returns their paths by
// figure ("api", "scaling", "docker_run").
func writePlots(r *result.Run, dir string) (map[string]string, error) {
	out := map[string]string{}
	type fig struct {
		key  string
		make func() (*plot.Plot, error)
	}
	var figs []fig
	if r.API != nil {
		figs = append(figs, fig{"api", func() (*plot.Plot, error) { return apiPlot(r.API) }})
	}
	if r.Scaling != nil && len(r.Scaling.CreateMs) > 0 {
		figs = append(figs, fig{"scaling", func() (*plot.Plot, error) { return scalingPlot(r.Scaling) }})
	}
	if r.DockerRun != nil && len(r.DockerRun.Networks) > 0 {
		figs = append(figs, fig{"docker_run", func() (*plot.Plot, error) { return dockerRunPlot(r.DockerRun) }})
	}
	for _, f := range figs {
		p, err := f.make()
		if err != nil {
			return nil, fmt.Errorf("plot %s: %w", f.key, err)
		}
		path := filepath.Join(dir, "fig-"+f.key+".png")
		if err := p.Save(7*vg.Inch, 4*vg.Inch, path); err != nil {
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
		names = append(names, fmt.Sprintf("vxbridge, %d client(s)", r.Clients))
	}
	for _, an := range a.Anchors {
		if an.Name == "kernel" {
			vals = append(vals, an.PerSecond)
			names = append(names, "raw kernel (netlink), 1")
		}
	}
	bars, err := plotter.NewBarChart(vals, vg.Points(40))
	if err != nil {
		return nil, err
	}
	p.Add(bars)
	p.NominalX(names...)
	return p, nil
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
	bars, err := plotter.NewBarChart(vals, vg.Points(40))
	if err != nil {
		return nil, err
	}
	p.Add(bars)
	p.NominalX(names...)
	return p, nil
}

func lastProbe(s *result.Scaling) float64 {
	if len(s.Probes) == 0 {
		return 0
	}
	return s.Probes[len(s.Probes)-1].Latency.P99Ms
}
