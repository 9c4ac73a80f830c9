package result

import (
	"path/filepath"
	"testing"
	"time"
)

func TestQuantileNearestRank(t *testing.T) {
	s := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct{ q, want float64 }{{0.5, 5}, {0.99, 10}, {0.1, 1}, {0, 1}, {1, 10}} {
		if got := Quantile(s, c.q); got != c.want {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := Median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("Median = %v, want 2", got)
	}
}

func TestSummariseAndRoundTrip(t *testing.T) {
	d := Summarise([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond})
	if d.N != 3 || d.P50Ms != 2 || d.P99Ms != 3 || d.MaxMs != 3 || d.MeanMs != 2 {
		t.Fatalf("Summarise = %+v", d)
	}
	path := filepath.Join(t.TempDir(), "r.json")
	in := &Run{Scaling: &Scaling{Endpoints: 7, CreateMs: []float64{1.5}}}
	if err := in.Write(path); err != nil {
		t.Fatal(err)
	}
	out, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if out.Scaling.Endpoints != 7 || out.Scaling.CreateMs[0] != 1.5 {
		t.Fatalf("round trip = %+v", out.Scaling)
	}
}

// TestKeepEarlierFigures: a run of figure 4 keeps figures 1-3 of the file,
// with the time they were measured (the old file's run times when it has no
// per-figure record), and replaces only what it measured.
func TestKeepEarlierFigures(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	prev := &Run{Started: t0, Finished: t0.Add(time.Hour), Machine: Machine{LoadBefore: "1", LoadAfter: "2"},
		API: &API{Rounds: 3}, Scaling: &Scaling{Endpoints: 1000}, CrossHost: &CrossHost{Rounds: 1},
		Measured: map[string]Measurement{KeyScaling: {Started: t0.Add(time.Minute)}}}
	now := t0.Add(24 * time.Hour)
	r := &Run{Started: now, CrossHost: &CrossHost{Rounds: 5},
		Measured: map[string]Measurement{KeyCrossHost: {Started: now}}}
	r.Keep(prev)
	if r.API == nil || r.API.Rounds != 3 || r.Scaling == nil || r.DockerRun != nil {
		t.Fatalf("kept %+v", r)
	}
	if r.CrossHost.Rounds != 5 {
		t.Errorf("figure 4 replaced by the old one: %+v", r.CrossHost)
	}
	if m := r.When(KeyAPI); !m.Started.Equal(t0) || m.LoadAfter != "2" {
		t.Errorf("api measured %+v, want the old run's times", m)
	}
	if m := r.When(KeyScaling); !m.Started.Equal(t0.Add(time.Minute)) {
		t.Errorf("scaling measured %+v, want its own record", m)
	}
	if m := r.When(KeyCrossHost); !m.Started.Equal(now) {
		t.Errorf("cross_host measured %+v, want this run", m)
	}
	r.Keep(nil) // no earlier file
}
