package bench

import (
	"time"

	"testing"

	"github.com/vxbridge/vxbridge/bench/result"
	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// DockerRunOptions sizes figure 1.
type DockerRunOptions struct {
	Rounds int
}

// BenchDockerRun times `docker run --rm --network X image true` on a dockerd
// in a namespace host, X a vxbridge network, a docker bridge network and
// none, one of each per round (the order rotating each round, so drift and
// warm caches fall on all alike). Ratios are against docker's bridge.
func BenchDockerRun(t testing.TB, bin string, o DockerRunOptions) *result.DockerRun {
	h := testbed.NewHost(t, testbed.HostOptions{Name: "bench"})
	h.ImportImage(t)
	h.StartPlugin(t, bin)
	h.MustDocker(t, "network", "create", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName,
		"--subnet", "10.203.0.0/24", "benchvx")
	h.MustDocker(t, "network", "create", "-d", "bridge", "--subnet", "10.204.0.0/24", "benchbr")
	nets := []struct{ label, arg string }{
		{"docker bridge", "benchbr"}, {"vxbridge", "benchvx"}, {"none", "none"},
	}
	// One unmeasured run each: the first container start pays for caches.
	for _, n := range nets {
		h.MustDocker(t, "run", "--rm", "--network", n.arg, testbed.Image, "true")
	}
	times := make([][]time.Duration, len(nets))
	for r := 0; r < o.Rounds; r++ {
		for i := range nets {
			k := (i + r) % len(nets)
			start := time.Now()
			h.MustDocker(t, "run", "--rm", "--network", nets[k].arg, testbed.Image, "true")
			times[k] = append(times[k], time.Since(start))
		}
	}
	out := &result.DockerRun{Rounds: o.Rounds}
	anchor := result.Summarise(times[0]).P50Ms
	for i, n := range nets {
		d := result.Summarise(times[i])
		out.Networks = append(out.Networks, result.DockerRunNet{Network: n.label, Latency: d,
			Ratio: d.P50Ms / anchor, Anchor: "docker bridge"})
	}
	return out
}
