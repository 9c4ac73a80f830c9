package result

import "testing"

func TestKeepSim(t *testing.T) {
	pt := func(design, shape string, hosts int) SimPoint {
		return SimPoint{Design: design, Shape: shape, Hosts: hosts, EtcdNodes: 1}
	}
	earlier := &Sim{PerHost: 50, Rate: 100, ChurnSeconds: 30, Observers: 1,
		Designs: []SimDesign{{Name: "before"}, {Name: "current"}},
		Points:  []SimPoint{pt("before", "3of20", 10), pt("current", "3of20", 10), pt("before", "3of20", 1000), pt("current", "3of20", 1000)},
		Limits:  []string{"before, 3of20, H=1000, etcd x1: etcd did not keep up", "current, 3of20, H=1000, etcd x1: ended after the churn: x"}}
	now := &Sim{PerHost: 50, Rate: 100, ChurnSeconds: 30, Observers: 1,
		Designs: []SimDesign{{Name: "current"}, {Name: "on-demand"}},
		Points:  []SimPoint{pt("current", "3of20", 1000), pt("on-demand", "3of20", 1000)}}
	if err := now.KeepSim(earlier); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range now.Points {
		got = append(got, p.Where())
	}
	want := []string{"before, 3of20, H=10, etcd x1", "current, 3of20, H=10, etcd x1", "before, 3of20, H=1000, etcd x1",
		"current, 3of20, H=1000, etcd x1", "on-demand, 3of20, H=1000, etcd x1"}
	if len(got) != len(want) {
		t.Fatalf("points %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("points %q, want %q", got, want)
		}
	}
	if len(now.Limits) != 1 || now.Limits[0] != earlier.Limits[0] {
		t.Fatalf("limits %q: want only the one of the point not measured again", now.Limits)
	}
	if len(now.Designs) != 3 {
		t.Fatalf("designs %v: want current, on-demand and before", now.Designs)
	}
	other := *earlier
	other.Rate = 50
	if err := now.KeepSim(&other); err == nil {
		t.Fatal("kept points of a run with other settings")
	}
}
