package bench

import (
	"net/netip"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/bench/sim"
)

// fakeKernel answers from maps, as neighMonitor would.
type fakeKernel struct{ add, del map[string]time.Time }

func (k fakeKernel) added(mac string) (time.Time, bool) { at, ok := k.add[mac]; return at, ok }
func (k fakeKernel) deleted(mac string, _ netip.Addr, _ time.Time) (time.Time, bool) {
	at, ok := k.del[mac]
	return at, ok
}

// TestConverge: only the observer's networks count; an addition converges
// from its commit and its Publish, a withdrawal from its commit; what the
// kernel never showed is missed; a kernel faster than the commit stamp
// stays negative.
func TestConverge(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ns := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	recs := []sim.Record{
		{Op: sim.OpAdd, VNI: 1, MAC: "a", Published: ns(0), Committed: ns(5 * time.Millisecond)},
		{Op: sim.OpAdd, VNI: 1, MAC: "b", Published: ns(0), Committed: ns(5 * time.Millisecond)},
		{Op: sim.OpAdd, VNI: 1, MAC: "c", Published: ns(0), Committed: ns(10 * time.Millisecond)},
		{Op: sim.OpDel, VNI: 1, MAC: "d", IP: "10.0.0.4", Published: ns(0), Committed: ns(2 * time.Millisecond)},
		{Op: sim.OpDel, VNI: 1, MAC: "e", IP: "10.0.0.5", Published: ns(0), Committed: ns(2 * time.Millisecond)},
		{Op: sim.OpAdd, VNI: 2, MAC: "f", Published: ns(0), Committed: ns(1 * time.Millisecond)},
	}
	k := fakeKernel{
		add: map[string]time.Time{"a": t0.Add(25 * time.Millisecond), "c": t0.Add(8 * time.Millisecond), "f": t0},
		del: map[string]time.Time{"d": t0.Add(7 * time.Millisecond)},
	}
	c := converge(recs, map[uint32]bool{1: true}, k)
	if c.changes != 5 || c.missed != 1 || c.goneMissed != 1 {
		t.Errorf("changes %d missed %d gone missed %d, want 5, 1, 1", c.changes, c.missed, c.goneMissed)
	}
	if len(c.fromCommit) != 2 || c.fromCommit[0] != 20 || c.fromCommit[1] != -2 || c.fromPublish[0] != 25 {
		t.Errorf("from commit %v, from publish %v, want [20 -2], [25 8]", c.fromCommit, c.fromPublish)
	}
	if len(c.gone) != 1 || c.gone[0] != 5 {
		t.Errorf("gone %v, want [5]", c.gone)
	}
}

func TestMetricSums(t *testing.T) {
	text := `# HELP etcd_debugging_mvcc_events_total Total number of events sent by this member.
# TYPE etcd_debugging_mvcc_events_total counter
etcd_debugging_mvcc_events_total 1234
etcd_debugging_mvcc_events_total_other 7
grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_type="unary"} 5
grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",grpc_type="unary"} 6
etcd_mvcc_db_total_size_in_bytes 2.097152e+06
`
	got := metricSums(text, []string{"etcd_debugging_mvcc_events_total", "grpc_server_handled_total", "etcd_mvcc_db_total_size_in_bytes", "absent"})
	want := map[string]float64{"etcd_debugging_mvcc_events_total": 1234, "grpc_server_handled_total": 11, "etcd_mvcc_db_total_size_in_bytes": 2097152}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestPerChangeMs(t *testing.T) {
	// 3 s of CPU in 10 s, 0.1 cores when quiet: 2 s extra over 100 changes.
	if got := perChangeMs(3*time.Second, 10*time.Second, 0.1, 100); got != 20 {
		t.Errorf("perChangeMs = %v, want 20", got)
	}
	if got := perChangeMs(time.Second, 10*time.Second, 0.5, 100); got != 0 {
		t.Errorf("below the quiet rate: %v, want 0", got)
	}
}

// TestLastWrites: the last kept addition (one withdrawn later does not
// count) and the last withdrawal, in the observer's networks only.
func TestLastWrites(t *testing.T) {
	recs := []sim.Record{
		{Op: sim.OpAdd, VNI: 1, MAC: "a", Committed: 1},
		{Op: sim.OpAdd, VNI: 1, MAC: "b", Committed: 2},
		{Op: sim.OpDel, VNI: 1, MAC: "x", Committed: 3},
		{Op: sim.OpAdd, VNI: 1, MAC: "c", Committed: 4},
		{Op: sim.OpAdd, VNI: 2, MAC: "d", Committed: 5},
		{Op: sim.OpDel, VNI: 1, MAC: "c", Committed: 6},
		{Op: sim.OpDel, VNI: 2, MAC: "e", Committed: 7},
	}
	add, del, ok := lastWrites(recs, map[uint32]bool{1: true})
	if !ok || add.MAC != "b" || del.MAC != "c" {
		t.Errorf("lastWrites = %s, %s, %v; want b, c", add.MAC, del.MAC, ok)
	}
	if _, _, ok := lastWrites(recs[:2], map[uint32]bool{1: true}); ok {
		t.Error("no withdrawal, yet ok")
	}
}
