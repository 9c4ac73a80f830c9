package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/vxlan"
)

// Fault scenarios of the data plane (issue 7): a lossy, slow underlay, and
// the plugin killed under continuous traffic. Tools shared with
// faults_etcd_test.go: watchTables (no entry may vanish at any sampled
// moment) and startPings (continuous traffic with per-packet accounting).

// tryTables is tables without failing the test, for sampling goroutines.
func tryTables(h *testbed.Host) (fdb, neigh map[string]string, err error) {
	dev := vxlan.DeviceName(xVNI)
	out, err := xExec(h, "bridge", "fdb", "show", "dev", dev)
	if err != nil {
		return nil, nil, fmt.Errorf("bridge fdb: %v: %s", err, out)
	}
	fdb = parseFDB(out)
	if out, err = xExec(h, "ip", "neigh", "show", "dev", dev); err != nil {
		return nil, nil, fmt.Errorf("ip neigh: %v: %s", err, out)
	}
	return fdb, parseNeigh(out), nil
}

// tableWatch samples hosts' VXLAN tables while a fault lasts and records
// every sample in which an entry a host must keep was missing.
type tableWatch struct {
	start      time.Time
	stop, done chan struct{}
	stopOnce   sync.Once
	samples    int
	misses     int
	first      []string // the first misses, for the report
	errs       []string
}

// watchTables samples every interval that each host in keep holds the FDB
// and neighbour entries of keep[host] (containers of other hosts), until
// requireNoMiss or the end of the test.
func (m *multiHost) watchTables(t *testing.T, keep map[*testbed.Host][]ctr, every time.Duration) *tableWatch {
	w := &tableWatch{start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(w.end)
	vteps := map[*testbed.Host]string{}
	for h, v := range m.vteps {
		vteps[h] = v
	}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			for h, cs := range keep {
				fdb, neigh, err := tryTables(h)
				if err != nil {
					w.errs = append(w.errs, fmt.Sprintf("%s: %v", h.Name, err))
					continue
				}
				for _, c := range cs {
					if fdb[c.mac] == vteps[c.h] && neigh[c.ip4] == c.mac && neigh[c.ip6] == c.mac {
						continue
					}
					w.misses++
					if len(w.first) < 10 {
						w.first = append(w.first, fmt.Sprintf("t+%v %s lacks %s's %s: fdb %q neigh %q %q",
							time.Since(w.start).Round(time.Millisecond), h.Name, c.h.Name, c.name, fdb[c.mac], neigh[c.ip4], neigh[c.ip6]))
					}
				}
			}
			w.samples++
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *tableWatch) end() {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
}

// requireNoMiss ends the watch and fails the test if an entry was missing
// in any sample.
func (w *tableWatch) requireNoMiss(t *testing.T) {
	t.Helper()
	w.end()
	t.Logf("table watch: %d samples over %v, %d missing entries", w.samples, time.Since(w.start).Round(time.Millisecond), w.misses)
	if w.misses > 0 {
		t.Errorf("a host dropped entries of a live peer (%d times); first:\n  %s", w.misses, strings.Join(w.first, "\n  "))
	}
	if len(w.errs) > 0 {
		t.Errorf("table watch could not read tables %d times: %s", len(w.errs), w.errs[0])
	}
	if w.samples < 10 {
		t.Errorf("table watch took only %d samples", w.samples)
	}
}

// pingStream is `ping -i INTERVAL -c N` from a container, run in the
// background, with every reply's sequence number kept.
type pingStream struct {
	h        *testbed.Host
	from, to string
	interval time.Duration
	count    int
	start    time.Time
	done     chan struct{}
	out      string
	err      error
}

// startPings pings to from container from on h every interval for dur.
func startPings(h *testbed.Host, from, to string, interval, dur time.Duration) *pingStream {
	p := &pingStream{h: h, from: from, to: to, interval: interval, count: int(dur / interval),
		start: time.Now(), done: make(chan struct{})}
	tool := "ping"
	if strings.Contains(to, ":") {
		tool = "ping6"
	}
	go func() {
		defer close(p.done)
		p.out, p.err = h.Docker("exec", from, tool, "-c", strconv.Itoa(p.count),
			"-i", strconv.FormatFloat(interval.Seconds(), 'f', -1, 64), "-W", "2", to)
	}()
	return p
}

var (
	pingSeq   = regexp.MustCompile(`seq=(\d+) `)
	pingTotal = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`)
)

// result waits for the stream to end and returns what was sent, what came
// back and the sequence numbers that did not.
func (p *pingStream) result(t *testing.T) (sent, received int, lost []int) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(time.Duration(p.count)*p.interval + 2*time.Minute):
		t.Fatalf("%s: ping %s -> %s did not end", p.h.Name, p.from, p.to)
	}
	m := pingTotal.FindStringSubmatch(p.out)
	if m == nil {
		t.Fatalf("%s: ping %s -> %s: no statistics (%v):\n%s", p.h.Name, p.from, p.to, p.err, lastLines(p.out, 10))
	}
	sent, _ = strconv.Atoi(m[1])
	seen := map[int]bool{}
	for _, s := range pingSeq.FindAllStringSubmatch(p.out, -1) {
		n, _ := strconv.Atoi(s[1])
		seen[n] = true
	}
	for i := range sent {
		if !seen[i] {
			lost = append(lost, i)
		}
	}
	return sent, len(seen), lost
}

// requireNoLoss fails the test unless every packet came back.
func (p *pingStream) requireNoLoss(t *testing.T) {
	t.Helper()
	sent, received, lost := p.result(t)
	t.Logf("%s: %s -> %s every %v: %d sent, %d received, %d lost", p.h.Name, p.from, p.to, p.interval, sent, received, len(lost))
	if len(lost) > 0 || sent == 0 {
		t.Errorf("%s: %s -> %s lost %d of %d packets: %s", p.h.Name, p.from, p.to, len(lost), sent, p.describeLoss(lost))
	}
}

// describeLoss says when packets were lost (offsets from the stream's start).
func (p *pingStream) describeLoss(lost []int) string {
	var parts []string
	for i := 0; i < len(lost) && len(parts) < 8; {
		j := i
		for j+1 < len(lost) && lost[j+1] == lost[j]+1 {
			j++
		}
		parts = append(parts, fmt.Sprintf("seq %d-%d (t+%v)", lost[i], lost[j], (time.Duration(lost[i])*p.interval).Round(time.Millisecond)))
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// lossChain drops a share of the packets crossing the host's underlay link,
// both ways, with iptables' statistic match (the test kernel has no
// sch_netem). VXLAN and etcd traffic both cross it.
const lossChain = "VXT-LOSS"

func setUnderlayLoss(t *testing.T, h *testbed.Host, probability float64) {
	t.Helper()
	h.Exec(t, "iptables", "-N", lossChain)
	h.Exec(t, "iptables", "-A", lossChain, "-m", "statistic", "--mode", "random",
		"--probability", strconv.FormatFloat(probability, 'f', -1, 64), "-j", "DROP")
	h.Exec(t, "iptables", "-I", "INPUT", "-i", testbed.UnderlayHostLink, "-j", lossChain)
	h.Exec(t, "iptables", "-I", "OUTPUT", "-o", testbed.UnderlayHostLink, "-j", lossChain)
}

func clearUnderlayLoss(h *testbed.Host) error {
	for _, args := range [][]string{
		{"-D", "INPUT", "-i", testbed.UnderlayHostLink, "-j", lossChain},
		{"-D", "OUTPUT", "-o", testbed.UnderlayHostLink, "-j", lossChain},
		{"-F", lossChain}, {"-X", lossChain},
	} {
		if out, err := h.TryExec("iptables", args...); err != nil {
			return fmt.Errorf("%s: iptables %s: %v: %s", h.Name, strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// leaseWatch samples, from etcd's side, the remaining TTL of each host's
// lease: how close a host came to being evicted.
type leaseWatch struct {
	stop, done chan struct{}
	stopOnce   sync.Once
	mu         sync.Mutex
	minLeft    map[string]int // host name -> lowest remaining TTL seen, seconds
	samples    int
	errs       []string
}

var leaseLeft = regexp.MustCompile(`remaining\((-?\d+)s\)`)

func (fc *faultCluster) watchLeases(t *testing.T, leases map[string]*testbed.Host, every time.Duration) *leaseWatch {
	w := &leaseWatch{stop: make(chan struct{}), done: make(chan struct{}), minLeft: map[string]int{}}
	t.Cleanup(func() { w.end() })
	go func() {
		defer close(w.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			for l, h := range leases {
				out, err := fc.etcdctl("lease", "timetolive", l)
				m := leaseLeft.FindStringSubmatch(out)
				w.mu.Lock()
				if err != nil || m == nil {
					w.errs = append(w.errs, fmt.Sprintf("%s: lease %s: %v %s", h.Name, l, err, strings.TrimSpace(out)))
				} else {
					left, _ := strconv.Atoi(m[1])
					if old, ok := w.minLeft[h.Name]; !ok || left < old {
						w.minLeft[h.Name] = left
					}
				}
				w.mu.Unlock()
			}
			w.samples++
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *leaseWatch) end() (minLeft map[string]int, samples int, errs []string) {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.minLeft, w.samples, w.errs
}

// peerDeletions are the plugin's log lines after offset in which it deleted
// FDB or neighbour entries of peers: an eviction shorter than a table
// sample shows here.
func peerDeletions(h *testbed.Host, offset int) []string {
	var out []string
	log := h.Plugin().Log()
	if offset > len(log) {
		offset = 0
	}
	for _, line := range strings.Split(log[offset:], "\n") {
		if strings.Contains(line, `msg="cross-host peers programmed"`) && peerDeleted.MatchString(line) {
			out = append(out, line)
		}
	}
	return out
}

var peerDeleted = regexp.MustCompile(`(fdb|neigh)_deleted=[1-9]`)

// requireNoPeerDeletions fails the test if a host's plugin deleted a peer's
// entries since logAt[host].
func requireNoPeerDeletions(t *testing.T, logAt map[*testbed.Host]int) {
	t.Helper()
	for h, at := range logAt {
		if del := peerDeletions(h, at); len(del) > 0 {
			t.Errorf("%s deleted peers' entries %d time(s) during the fault:\n  %s", h.Name, len(del), strings.Join(del, "\n  "))
		}
	}
}

// logOffsets are the current lengths of the hosts' plugin logs.
func logOffsets(hosts ...*testbed.Host) map[*testbed.Host]int {
	at := map[*testbed.Host]int{}
	for _, h := range hosts {
		at[h] = len(h.Plugin().Log())
	}
	return at
}

// etcdEvents are the plugin's log lines about etcd after offset, shortened
// to time, message and the ids they name.
func etcdEvents(h *testbed.Host, offset int) []string {
	log := h.Plugin().Log()
	if offset > len(log) {
		offset = 0
	}
	event := regexp.MustCompile(`time=\S*T(\S+) level=\S+ msg="(etcd: [^"]*)"(.*?(?:lease|hosts|gone)=\S+)?`)
	var out []string
	for _, m := range event.FindAllStringSubmatch(log[offset:], -1) {
		out = append(out, m[1]+" "+m[2]+m[3])
	}
	return out
}

// etcdWarnings counts the plugin's etcd warnings logged after offset.
func etcdWarnings(h *testbed.Host, offset int) map[string]int {
	log := h.Plugin().Log()
	counts := map[string]int{}
	if offset > len(log) {
		return counts
	}
	msg := regexp.MustCompile(`level=WARN msg="(etcd: [^";]*)`)
	for _, m := range msg.FindAllStringSubmatch(log[offset:], -1) {
		counts[m[1]]++
	}
	return counts
}

// etcdRoundTrips asks etcd n times from h, as its plugin does (through
// pluginEtcd), and returns how long each request took as etcdctl reports
// it, or the error.
func (fc *faultCluster) etcdRoundTrips(h *testbed.Host, n int) []string {
	took := regexp.MustCompile(`took = (\S+)`)
	var out []string
	for range n {
		o, err := h.TryExec("etcdctl", "--endpoints", fc.pluginEtcd, "--command-timeout", "5s", "endpoint", "health")
		if m := took.FindStringSubmatch(o); err == nil && m != nil {
			out = append(out, m[1])
		} else {
			out = append(out, fmt.Sprintf("failed (%v)", err))
		}
	}
	return out
}

// (u) A lossy, slow underlay for 6 TTLs: 10% of the packets crossing each
// host's underlay link are dropped, each way (VXLAN and etcd alike), and
// etcd's traffic is delayed 100 ms ± 50 ms each way by a relay. No host may
// drop a live peer's entries at any sampled moment, and no host may lose
// its lease; the lowest remaining lease TTL etcd shows measures the
// keep-alive margin.
func TestFaultLossyUnderlay(t *testing.T) {
	fc := newFaultBed(t)
	relayBin := testbed.BuildStaticGo(t, "github.com/vxbridge/vxbridge/e2e/delayrelay")
	relayAddr := fc.ul.IP + ":2390"
	relay := fc.ul.NetNS().Start(t, filepath.Join(fc.etcdDir, "delayrelay.log"), relayBin, "-listen", relayAddr,
		"-to", fc.ul.IP+":2379", "-delay", "100ms", "-jitter", "50ms", "-slow=false")
	fc.pluginEtcd = "http://" + relayAddr
	fc.addHosts(t, "ul", 2)
	h1, h2 := fc.hosts[0], fc.hosts[1]
	c1, c2 := fc.cs[0], fc.cs[1]
	leases := fc.requireNoStaleKeys(t, 2*faultTTL)

	const phase = 6 * faultTTL
	byLease := map[string]*testbed.Host{}
	for _, h := range fc.hosts {
		byLease[fmt.Sprintf("%x", leases[pluginHostID(t, h)])] = h
	}
	logAt := logOffsets(fc.hosts...)
	t.Logf("etcd requests from %s before the fault: %v", h1.Name, fc.etcdRoundTrips(h1, 3))
	if err := relay.Signal(syscall.SIGUSR1); err != nil { // slow from now on
		t.Fatal(err)
	}
	for _, h := range fc.hosts {
		setUnderlayLoss(t, h, 0.10)
		t.Cleanup(func() { clearUnderlayLoss(h) })
	}
	t.Logf("etcd requests from %s on the lossy, slow underlay: %v", h1.Name, fc.etcdRoundTrips(h1, 5))
	start := time.Now()
	tables := fc.watchTables(t, map[*testbed.Host][]ctr{h1: {c2}, h2: {c1}}, 250*time.Millisecond)
	lw := fc.watchLeases(t, byLease, 500*time.Millisecond)
	pings := startPings(h1, c1.name, c2.ip4, 100*time.Millisecond, phase-2*time.Second)

	sent, received, _ := pings.result(t)
	t.Logf("data plane during the phase: %d pings sent, %d answered (%.0f%% lost: 4 crossings at 10%%)",
		sent, received, 100*float64(sent-received)/float64(max(sent, 1)))
	time.Sleep(time.Until(start.Add(phase)))
	minLeft, samples, errs := lw.end()
	tables.requireNoMiss(t)
	requireNoPeerDeletions(t, logAt)
	for _, h := range fc.hosts {
		if err := clearUnderlayLoss(h); err != nil {
			t.Error(err)
		}
	}
	if err := relay.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	t.Logf("lossy, slow underlay for %v (TTL %v): lowest remaining lease TTL seen by etcd per host %v (%d samples)",
		time.Since(start).Round(time.Millisecond), faultTTL, minLeft, samples)
	for _, h := range fc.hosts {
		t.Logf("%s: plugin's etcd warnings during the phase: %v", h.Name, etcdWarnings(h, logAt[h]))
		if _, ok := minLeft[h.Name]; !ok {
			t.Errorf("%s: no lease sample", h.Name)
		}
	}
	if len(errs) > 0 {
		t.Errorf("a host's lease was gone or unreadable %d times: %s", len(errs), errs[0])
	}
	after := fc.requireNoStaleKeys(t, 2*faultTTL)
	if s := fc.leaseChanges(t, leases, after); s != "every host kept its lease" {
		t.Errorf("a host lost its lease on the lossy underlay: %s", s)
	}

	n1 := fc.run(t, h1, "n1")
	n2 := fc.run(t, h2, "n2")
	for _, h := range fc.hosts {
		fc.waitProgrammed(t, h, 10*time.Second, c1, c2, n1, n2)
	}
	waitPing(t, h1, c1.name, n2.ip4)
	waitPing(t, h2, c2.name, n1.ip6)
	fc.requireNoStaleKeys(t, 2*faultTTL)
	fc.requireNoLeaksAnywhere(t)
}

// linkIndexes are the ifindexes of the host's vxbridge links (bridge,
// VXLAN device, veths): a link the reconcile re-created would change.
func linkIndexes(t *testing.T, h *testbed.Host) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, line := range linkState(t, h) {
		if strings.Contains(line, "alias vxbridge:") {
			out[name] = strings.SplitN(line, ":", 2)[0]
		}
	}
	return out
}

// (k) The plugin killed -9 and started again under continuous traffic: a
// same-host pair and a cross-host pair (both ways) ping every 10 ms; no
// packet may be lost, no link re-created, no table entry missing at any
// sampled moment, the tables after the restart's reconcile equal to those
// before.
func TestFaultPluginKillLiveTraffic(t *testing.T) {
	fc := newFaultBed(t)
	fc.addHosts(t, "pk", 2)
	h1, h2 := fc.hosts[0], fc.hosts[1]
	c1b := fc.run(t, h1, "c1b")
	all := append(append([]ctr{}, fc.cs...), c1b)
	for _, h := range fc.hosts {
		fc.waitProgrammed(t, h, 15*time.Second, all...)
	}
	c1, c2 := fc.cs[0], fc.cs[1]
	waitPing(t, h1, c1.name, c1b.ip4)
	fdbBefore, neighBefore := tables(t, h1)
	linksBefore := linkIndexes(t, h1)
	fc.requireNoStaleKeys(t, 2*faultTTL)

	const dur = 20 * time.Second
	watch := fc.watchTables(t, map[*testbed.Host][]ctr{h1: {c2}, h2: {c1, c1b}}, 100*time.Millisecond)
	pings := []*pingStream{
		startPings(h1, c1.name, c1b.ip4, 10*time.Millisecond, dur),
		startPings(h1, c1.name, c2.ip4, 10*time.Millisecond, dur),
		startPings(h2, c2.name, c1b.ip6, 10*time.Millisecond, dur),
	}
	time.Sleep(2 * time.Second)
	logAt := logOffsets(fc.hosts...)
	old := h1.Plugin()
	if err := old.Kill9(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	fc.startPlugin(t, h1)
	t.Logf("%s: plugin serving again %v after kill -9", h1.Name, time.Since(killed).Round(time.Millisecond))
	// Its start-up reconcile ran before it served; let the periodic one
	// (every 2 s) and the cluster re-publish run under the traffic too.
	var loaded string
	testbed.WaitFor(t, 10*time.Second, func() error {
		loaded = regexp.MustCompile(`msg="state loaded".*`).FindString(h1.Plugin().Log()[logAt[h1]:])
		if loaded == "" {
			return fmt.Errorf("no start-up reconcile in the log yet")
		}
		return nil
	})
	t.Logf("%s: start-up reconcile: %s", h1.Name, loaded)
	for _, p := range pings {
		p.requireNoLoss(t)
	}
	watch.requireNoMiss(t)
	requireNoPeerDeletions(t, logAt)
	fdbAfter, neighAfter := tables(t, h1)
	if fmt.Sprint(fdbAfter) != fmt.Sprint(fdbBefore) || fmt.Sprint(neighAfter) != fmt.Sprint(neighBefore) {
		t.Errorf("%s's tables changed across the restart:\n fdb   %v -> %v\n neigh %v -> %v", h1.Name, fdbBefore, fdbAfter, neighBefore, neighAfter)
	}
	if after := linkIndexes(t, h1); fmt.Sprint(after) != fmt.Sprint(linksBefore) {
		t.Errorf("%s: links re-created by the restart (name -> ifindex): %v -> %v", h1.Name, indexList(linksBefore), indexList(after))
	}
	fc.requireNoStaleKeys(t, 2*faultTTL)
	fc.requireNoLeaksAnywhere(t)
}

func indexList(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k+"="+m[k])
	}
	sort.Strings(keys)
	return strings.Join(keys, " ")
}
