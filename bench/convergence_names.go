package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/bench/result"
	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// Names in figure 5: a third prober on host B (convergenceprobe -names)
// asks docker's embedded DNS for each start's container by name, every
// namesInterval, from before `docker run -d` until an answer holds its
// address, and after `docker rm -f` until none does. Docker forwards a name
// it does not know to the container's upstream (a test resolver in the
// underlay namespace, see namesUpstream), through vxbridge's DNS server;
// docker's overlay answers its swarm's containers itself.

// nameProber is the names prober of one driver.
type nameProber struct {
	dir         string
	named, gone []float64 // ms after docker run returned / docker rm returned
	rawNamed    []float64
	missed      int
	goneMissed  int
}

// startNameProber runs driver i's name prober on b, asking for the names
// of its starts.
func startNameProber(t testing.TB, b *testbed.Host, d *convDriver, i, starts int) *nameProber {
	t.Helper()
	p := &nameProber{dir: filepath.Join(d.dir, "names")}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	names := make([]string, starts)
	for k := range names {
		names[k] = startName(i, k)
	}
	b.MustDocker(t, "run", "-d", "--name", fmt.Sprintf("namer%d", i), "--network", d.net, "--ip", d.prefix+"32",
		"-v", p.dir+":"+probeDir, benchImg, probeBin, "-dir", probeDir, "-names", strings.Join(names, ","),
		"-interval", namesInterval.String())
	return p
}

// startName is the container name of driver i's start k.
func startName(i, k int) string { return fmt.Sprintf("t%d-%d", i, k) }

// arm lets the prober ask for start k's name.
func (p *nameProber) arm(t testing.TB, k int) { touch(t, p.dir, "arm-"+strconv.Itoa(k)) }

// found records when start k's name first answered, after run returned.
func (p *nameProber) found(t testing.TB, what string, k int, returned time.Time) {
	at, ok := waitStamp(p.dir, "reach-"+strconv.Itoa(k), reachWait)
	if !ok {
		p.missed++
		t.Logf("%s start %d: not found by name from B within %s", what, k, reachWait)
		return
	}
	d := ms(at.Sub(returned))
	p.rawNamed = append(p.rawNamed, d)
	p.named = append(p.named, max(d, 0))
}

// disarm lets the prober ask until start k's name is gone.
func (p *nameProber) disarm(t testing.TB, k int) { touch(t, p.dir, "disarm-"+strconv.Itoa(k)) }

// removed records when start k's name stopped answering after docker rm
// returned (disarm came first).
func (p *nameProber) removed(t testing.TB, what string, k int, removed time.Time) {
	at, ok := waitStamp(p.dir, "gone-"+strconv.Itoa(k), goneWait)
	if !ok {
		p.goneMissed++
		t.Logf("%s start %d: name still answered %s after docker rm -f", what, k, goneWait)
		return
	}
	p.gone = append(p.gone, max(ms(at.Sub(removed)), 0))
}

func (p *nameProber) summarise(d *result.ConvergenceDriver) {
	d.Named, d.NamedRawMs, d.NamedMissed = result.SummariseMs(p.named), p.rawNamed, p.missed
	d.NameGone, d.NameGoneMissed = result.SummariseMs(p.gone), p.goneMissed
}

func touch(t testing.TB, dir, name string) {
	if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// namesUpstream runs a resolver in the underlay namespace that answers
// NXDOMAIN to everything: the hosts' daemons forward their containers'
// unknown names there (dockerd --dns), so a name not (or no longer) known
// gets its answer at once, as from a real upstream.
func namesUpstream(t testing.TB, ul *testbed.Underlay, dir string) string {
	t.Helper()
	tool := testbed.BuildStaticGo(t, "github.com/vxbridge/vxbridge/e2e/dnstool")
	ul.NetNS().Start(t, filepath.Join(dir, "upstream.log"), tool, "serve", "-listen", ul.IP+":53", "-quiet")
	return ul.IP
}
