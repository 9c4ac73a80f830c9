package bench

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/bench/result"
)

// APIOptions sizes figure 2.
type APIOptions struct {
	Rounds   int   // interleaved rounds (each runs every client count and both anchors)
	PerRound int   // lifecycles per client count per round
	Clients  []int // concurrent clients, e.g. 1, 8, 32
}

// samples gathers one configuration's measurements over all rounds.
type samples struct {
	mu         sync.Mutex
	lifecycle  []time.Duration
	calls      map[string][]time.Duration
	perSecond  []float64
	errors     int
	cpu        time.Duration // the plugin's user+system CPU time
	machineCPU time.Duration // the whole machine's busy CPU time (machineBusy)
}

// msPer is d in milliseconds per sample, for the CPU columns.
func (s *samples) msPer(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond) / float64(max(len(s.lifecycle), 1))
}

func (s *samples) record(call string, d time.Duration) {
	s.mu.Lock()
	s.calls[call] = append(s.calls[call], d)
	s.mu.Unlock()
}

// BenchAPI measures full endpoint lifecycles straight on the socket of a
// plugin in a fresh namespace, rounds interleaving every client count with
// the anchors: the bare HTTP round trip (Plugin.Activate) and the raw
// kernel work of an endpoint (veth pair on a bridge, up, delete) done
// directly over netlink in the same namespace, one by one and from
// kernelParallel goroutines, and the kernel floor (floor.go).
func BenchAPI(t testing.TB, bin string, o APIOptions) *result.API {
	p := newPlugin(t, bin)
	p.start(t)
	c := newClient(p.socket)
	defer c.close()
	n, err := createNetwork(c, "10.201.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	kerns := newKernelAnchors(t, p, kernelParallel)
	kern := kerns[0]
	runs := map[int]*samples{}
	for _, k := range o.Clients {
		runs[k] = &samples{calls: map[string][]time.Duration{}}
	}
	httpFloor := &samples{calls: map[string][]time.Duration{}}
	kernFloor := &samples{calls: map[string][]time.Duration{}}
	kernPar := &samples{calls: map[string][]time.Duration{}}
	floor := &samples{calls: map[string][]time.Duration{}}
	reap := newReaper(t, p.ns.Path())
	for r := 0; r < o.Rounds; r++ {
		timeSerial(httpFloor, o.PerRound, func() error {
			return c.call("Plugin.Activate", struct{}{}, nil)
		})
		timeSerial(kernFloor, o.PerRound, func() error { return kern.endpoint(kernFloor.record) })
		timeParallel(kernPar, kerns, o.PerRound)
		if err := timeFloor(floor, kerns, reap, o.PerRound); err != nil {
			t.Fatalf("kernel floor: %v", err)
		}
		for _, k := range o.Clients {
			cpu0, busy0 := p.cpuTime(t), machineBusy()
			runLifecycles(p.socket, n, k, o.PerRound, runs[k])
			runs[k].cpu += p.cpuTime(t) - cpu0
			runs[k].machineCPU += machineBusy() - busy0
		}
		t.Logf("api round %d/%d done", r+1, o.Rounds)
	}
	out := &result.API{Rounds: o.Rounds, PerRound: o.PerRound}
	for _, k := range o.Clients {
		s := runs[k]
		run := result.APIRun{Clients: k, PerSecond: result.Median(s.perSecond), PerSecondRounds: s.perSecond,
			Lifecycle: result.Summarise(s.lifecycle), Errors: s.errors,
			PluginCPUMsPerLifecycle: s.msPer(s.cpu), MachineCPUMsPerLifecycle: s.msPer(s.machineCPU)}
		run.Calls = summariseAll(s.calls)
		out.Runs = append(out.Runs, run)
	}
	out.Anchors = []result.APIAnchor{
		{Name: "http", What: "Plugin.Activate round trip on the same socket, one kept-alive client",
			PerSecond: result.Median(httpFloor.perSecond), Latency: result.Summarise(httpFloor.lifecycle)},
		{Name: "kernel", What: "raw netlink in the same namespace: veth pair with one end on a bridge, up, delete",
			PerSecond: result.Median(kernFloor.perSecond), Latency: result.Summarise(kernFloor.lifecycle),
			Steps: summariseAll(kernFloor.calls)},
		{Name: fmt.Sprintf("kernel x%d", kernelParallel),
			What:      fmt.Sprintf("the same raw netlink work from %d goroutines, one netlink socket each", kernelParallel),
			PerSecond: result.Median(kernPar.perSecond), Latency: result.Summarise(kernPar.lifecycle),
			Steps: summariseAll(kernPar.calls)},
		{Name: KernelFloor,
			What: fmt.Sprintf("vxbridge's kernel work alone, from %d goroutines: veth pair created up on a bridge, "+
				"moved to an interface group, the group deleted in batches in the background", kernelParallel),
			PerSecond: result.Median(floor.perSecond), Latency: result.Summarise(floor.lifecycle),
			Steps: summariseAll(floor.calls), MachineCPUMsPerLifecycle: floor.msPer(floor.machineCPU)},
	}
	return out
}

// timeSerial runs fn count times in a row, recording each and the rate.
func timeSerial(s *samples, count int, fn func() error) {
	begin := time.Now()
	for i := 0; i < count; i++ {
		start := time.Now()
		if err := fn(); err != nil {
			s.errors++
			continue
		}
		s.lifecycle = append(s.lifecycle, time.Since(start))
	}
	s.perSecond = append(s.perSecond, float64(count)/time.Since(begin).Seconds())
}

// runLifecycles runs total lifecycles spread over k clients, each with its
// own connection, and records the rate of the whole batch.
func runLifecycles(socket string, n network, k, total int, s *samples) {
	ops := make([]func() error, k)
	for i := range ops {
		c := newClient(socket)
		defer c.close()
		ops[i] = func() error { return lifecycle(c, n, s.record) }
	}
	timeBatch(s, ops, total)
}

// timeBatch runs total operations over one goroutine per op, each goroutine
// calling its own op until the batch is done, recording each operation's
// time and the rate of the whole batch.
func timeBatch(s *samples, ops []func() error, total int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	for _, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(total) {
				start := time.Now()
				err := op()
				d := time.Since(start)
				s.mu.Lock()
				if err != nil {
					s.errors++
				} else {
					s.lifecycle = append(s.lifecycle, d)
				}
				s.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.perSecond = append(s.perSecond, float64(total)/time.Since(begin).Seconds())
}

// kernelParallel is how many goroutines the parallel kernel anchor uses: it
// shows whether the kernel itself would let concurrent clients go faster.
const kernelParallel = 8

// KernelFloor names the kernel floor anchor in the results.
var KernelFloor = fmt.Sprintf("kernel floor x%d", kernelParallel)

// timeParallel runs total kernel endpoints spread over the anchors, each in
// its own goroutine, recording each and the rate of the batch.
func timeParallel(s *samples, ks []*kernelAnchor, total int) {
	ops := make([]func() error, len(ks))
	for i, k := range ks {
		ops[i] = func() error { return k.endpoint(s.record) }
	}
	timeBatch(s, ops, total)
}

// kernelAnchor does an endpoint's kernel work with no plugin in the way.
type kernelAnchor struct {
	nlh *netlink.Handle
	br  netlink.Link
	id  int
	seq int
}

// newKernelAnchors makes a bridge in the plugin's namespace and n anchors,
// each with a netlink socket of its own bound to that namespace.
func newKernelAnchors(t testing.TB, p *plugin, n int) []*kernelAnchor {
	ns, err := netns.GetFromPath(p.ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	var ks []*kernelAnchor
	for i := 0; i < n; i++ {
		nlh, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nlh.Close)
		ks = append(ks, &kernelAnchor{nlh: nlh, id: i})
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "vxbench0"}}
	if err := ks[0].nlh.LinkAdd(br); err != nil {
		t.Fatalf("anchor bridge: %v", err)
	}
	if err := ks[0].nlh.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	l, err := ks[0].nlh.LinkByName("vxbench0")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		k.br = l
	}
	return ks
}

// endpoint times each step, so the report can say where an endpoint's
// kernel time goes.
func (k *kernelAnchor) endpoint(tm timer) error {
	k.seq++
	name := fmt.Sprintf("vxbh%d-%d", k.id, k.seq)
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: k.br.Attrs().Index},
		PeerName: fmt.Sprintf("vxbp%d-%d", k.id, k.seq)}
	steps := []struct {
		name string
		fn   func(netlink.Link) error
	}{{"veth add (on bridge)", k.nlh.LinkAdd}, {"link up", k.nlh.LinkSetUp}, {"veth delete", k.nlh.LinkDel}}
	for _, s := range steps {
		start := time.Now()
		if err := s.fn(v); err != nil {
			return fmt.Errorf("%s %s: %w", s.name, name, err)
		}
		tm(s.name, time.Since(start))
	}
	return nil
}

func summariseAll(m map[string][]time.Duration) map[string]result.Dist {
	out := map[string]result.Dist{}
	for k, ds := range m {
		out[k] = result.Summarise(ds)
	}
	return out
}
