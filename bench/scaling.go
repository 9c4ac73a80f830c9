package bench

import (
	"encoding/json"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/bench/result"
	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// ScalingOptions sizes figure 3.
type ScalingOptions struct {
	Endpoints int // fill the network to this many (the bridge takes 1024 ports)
	Probes    int // full lifecycles measured at each fill level
	Restarts  int // restart-to-ready samples, empty and full
}

// BenchScaling fills one network endpoint by endpoint, timing each; at fill
// levels it runs probe lifecycles; it times restarts with an empty store
// (the anchor) and with the full one, and reads VmRSS.
func BenchScaling(t testing.TB, bin string, o ScalingOptions) *result.Scaling {
	p := newPlugin(t, bin)
	out := &result.Scaling{Endpoints: o.Endpoints}
	var readyEmpty []time.Duration
	for i := 0; i < o.Restarts; i++ {
		readyEmpty = append(readyEmpty, p.start(t))
		p.stop(t)
	}
	out.ReadyEmpty = result.Summarise(readyEmpty)
	p.start(t)
	c := newClient(p.socket)
	defer c.close()
	n, err := createNetwork(c, "10.202.0.0/20")
	if err != nil {
		t.Fatal(err)
	}
	out.RSSEmptyKiB = p.rssKiB(t)
	sb := newSandbox(t, p)
	br := networkBridge(t, sb.nlh)
	levels := []int{1, 10, 100, 250, 500, 750, o.Endpoints}
	probe := func(fill int) {
		var ds, adds, dels []time.Duration
		for i := 0; i < o.Probes; i++ {
			start := time.Now()
			if err := lifecycle(c, n, nil); err != nil {
				t.Fatalf("probe at %d endpoints: %v", fill, err)
			}
			ds = append(ds, time.Since(start))
			add, del := kernelProbe(t, sb.nlh, br)
			adds, dels = append(adds, add), append(dels, del)
		}
		out.Probes = append(out.Probes, result.Probe{Fill: fill, Latency: result.Summarise(ds),
			KernelAdd: result.Summarise(adds), KernelDel: result.Summarise(dels)})
	}
	for i := 1; i <= o.Endpoints; i++ {
		start := time.Now()
		ep, err := up(c, n, nil)
		if err != nil {
			t.Fatalf("endpoint %d: %v", i, err)
		}
		out.CreateMs = append(out.CreateMs, float64(time.Since(start))/float64(time.Millisecond))
		// Untimed, as docker's own work: without it the plugin's start-up
		// rightly collects the endpoints as left by docker while it was down.
		sb.take(t, ep.SrcName)
		if slices.Contains(levels, i) {
			probe(i)
		}
	}
	out.RSSFullKiB = p.rssKiB(t)
	c.close()
	var readyFull []time.Duration
	for i := 0; i < o.Restarts; i++ {
		p.stop(t)
		readyFull = append(readyFull, p.start(t))
	}
	out.ReadyFull = result.Summarise(readyFull)
	if kept := countEndpoints(t, p); kept != o.Endpoints {
		t.Fatalf("after restarts the plugin holds %d endpoints, want %d: restart timings are not of a full store", kept, o.Endpoints)
	}
	out.RSSAfterRestartKiB = p.rssKiB(t)
	return out
}

// networkBridge finds the bridge of the one network in the plugin's
// namespace.
func networkBridge(t testing.TB, nlh *netlink.Handle) netlink.Link {
	t.Helper()
	links, err := nlh.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Type() == "bridge" && strings.HasPrefix(l.Attrs().Name, driver.BridgePrefix) {
			return l
		}
	}
	t.Fatal("no vxbridge bridge in the plugin's namespace")
	return nil
}

// kernelProbe is figure 3's kernel anchor: a veth pair created up on br
// (which holds the network's endpoints) and deleted, each step timed.
func kernelProbe(t testing.TB, nlh *netlink.Handle, br netlink.Link) (add, del time.Duration) {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vxbkp0", MasterIndex: br.Attrs().Index, Flags: net.FlagUp},
		PeerName: "vxbkp1"}
	start := time.Now()
	if err := nlh.LinkAdd(v); err != nil {
		t.Fatalf("kernel probe: %v", err)
	}
	add = time.Since(start)
	start = time.Now()
	if err := nlh.LinkDel(v); err != nil {
		t.Fatalf("kernel probe: %v", err)
	}
	return add, time.Since(start)
}

// sandbox stands for the containers' namespaces: docker moves the container
// end of each joined veth out of the plugin's namespace, and the plugin
// treats a joined endpoint whose end is still at home as an orphan docker
// left while the plugin was down (orphans.CollectLeftWhileDown). One
// namespace holds them all: the names the plugin picks are unique.
type sandbox struct {
	nlh *netlink.Handle // in the plugin's namespace
	fd  int
}

func newSandbox(t testing.TB, p *plugin) *sandbox {
	home, err := netns.GetFromPath(p.ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { home.Close() })
	nlh, err := netlink.NewHandleAt(home)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nlh.Close)
	sbNS := testbed.NewNetNS(t)
	sb, err := netns.GetFromPath(sbNS.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	return &sandbox{nlh: nlh, fd: int(sb)}
}

func (s *sandbox) take(t testing.TB, name string) {
	t.Helper()
	l, err := s.nlh.LinkByName(name)
	if err != nil {
		t.Fatalf("container end %q: %v", name, err)
	}
	if err := s.nlh.LinkSetNsFd(l, s.fd); err != nil {
		t.Fatalf("move %q to the sandbox: %v", name, err)
	}
}

// countEndpoints asks the plugin (VxBridge.Status) how many endpoints it holds.
func countEndpoints(t testing.TB, p *plugin) int {
	t.Helper()
	c := newClient(p.socket)
	defer c.close()
	var st struct {
		Endpoints []json.RawMessage `json:"endpoints"`
	}
	if err := c.call("VxBridge.Status", struct{}{}, &st); err != nil {
		t.Fatal(err)
	}
	return len(st.Endpoints)
}
