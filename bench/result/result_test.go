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
