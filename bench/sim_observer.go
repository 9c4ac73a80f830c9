package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/bench/sim"
	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/vxlan"
)

// observer is a real plugin on a namespace host of the testbed (its own
// dockerd idles: the harness speaks to the plugin's socket as dockerd
// would), on the underlay with etcd and the synthetic hosts.
type observer struct {
	name string
	h    *testbed.Host
	c    *client
	nets []*obsNet
	mon  *neighMonitor
}

// obsNet is one of the observer's networks.
type obsNet struct {
	sim.Net
	n      network
	nsPath string     // where its VXLAN device is
	own    []endpoint // the observer's own endpoints, kept
}

// observerCallTimeout bounds one plugin call of an observer: joining a
// network of 50,000 remote endpoints programs them all in CreateNetwork.
const observerCallTimeout = 10 * time.Minute

func newObserver(t testing.TB, ul *testbed.Underlay, bin, etcdURLs string, i int, args ...string) *observer {
	t.Helper()
	h := testbed.NewHost(t, testbed.HostOptions{Name: fmt.Sprintf("obs%d", i)})
	ul.Attach(t, h)
	h.StartPlugin(t, bin, append([]string{"--etcd-endpoints", etcdURLs, "--vtep-interface", testbed.UnderlayHostLink, "--log-level", "warn"}, args...)...)
	o := &observer{name: h.Name, h: h, c: newClientTimeout(h.PluginSocket(), observerCallTimeout), mon: newNeighMonitor(t)}
	t.Cleanup(o.c.close)
	return o
}

// join creates the network on the observer as `docker network create -d
// vxbridge --ipam-driver vxbridge --subnet S -o vxlan.id=V` does, with own
// endpoints in it, and returns how long CreateNetwork took.
func (o *observer) join(t testing.TB, n sim.Net, own int) time.Duration {
	t.Helper()
	start := time.Now()
	nw, err := createNetworkWith(o.c, n.Subnet.String(), map[string]string{"vxlan.id": fmt.Sprint(n.VNI)})
	if err != nil {
		t.Fatalf("%s: create network vxlan.id %d: %v", o.name, n.VNI, err)
	}
	took := time.Since(start)
	on := &obsNet{Net: n, n: nw}
	if on.nsPath, err = o.deviceNS(vxlan.DeviceName(n.VNI)); err != nil {
		t.Fatalf("%s: %v", o.name, err)
	}
	for range own {
		ep, err := up(o.c, nw, nil)
		if err != nil {
			t.Fatalf("%s: endpoint in vxlan.id %d: %v", o.name, n.VNI, err)
		}
		on.own = append(on.own, ep)
	}
	o.nets = append(o.nets, on)
	return took
}

// deviceNS is the namespace holding the VXLAN device dev: one of the
// plugin's (--netns-dir), or the host's.
func (o *observer) deviceNS(dev string) (string, error) {
	names, err := o.h.PluginNamespaces()
	if err != nil {
		return "", err
	}
	paths := []string{o.h.NetNS().Path()}
	for _, n := range names {
		paths = append(paths, filepath.Join(o.h.PluginNetNSDir(), n))
	}
	for _, p := range paths {
		if hasLink(p, dev) {
			return p, nil
		}
	}
	return "", fmt.Errorf("no namespace of %s has %s", o.name, dev)
}

func hasLink(nsPath, name string) bool {
	nlh, closeNS, err := handleAt(nsPath)
	if err != nil {
		return false
	}
	defer closeNS()
	_, err = nlh.LinkByName(name)
	return err == nil
}

// handleAt is a netlink handle in the namespace at nsPath.
func handleAt(nsPath string) (*netlink.Handle, func(), error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, nil, err
	}
	nlh, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, nil, err
	}
	return nlh, func() { nlh.Close(); ns.Close() }, nil
}

// tables counts the FDB and neighbour entries of the observer's VXLAN
// devices (what the plugin programmed, as its vxlan package lists them).
func (o *observer) tables() (fdb, neigh int, err error) {
	for _, n := range o.nets {
		nlh, closeNS, err := handleAt(n.nsPath)
		if err != nil {
			return 0, 0, err
		}
		tab, err := vxlan.New(vxlan.Options{Handle: nlh}).Entries(vxlan.DeviceName(n.VNI))
		closeNS()
		if err != nil {
			return 0, 0, err
		}
		fdb, neigh = fdb+len(tab.FDB), neigh+len(tab.Neigh)
	}
	return fdb, neigh, nil
}

// waitTables waits until the observer holds want FDB entries and returns
// when it saw that.
func (o *observer) waitTables(want int, wait time.Duration) (time.Time, error) {
	err := testbed.Poll(wait, func() error {
		fdb, _, err := o.tables()
		if err != nil {
			return err
		}
		if fdb != want {
			return fmt.Errorf("%s holds %d FDB entries, want %d", o.name, fdb, want)
		}
		return nil
	})
	return time.Now(), err
}

// waitListed waits until the observer's followers know want remote
// endpoints (its status report: the records listed, whether programmed or
// not) and returns when it saw that.
func (o *observer) waitListed(want int, wait time.Duration) (time.Time, error) {
	err := testbed.Poll(wait, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rep, err := status.Fetch(ctx, o.h.PluginSocket())
		if err != nil {
			return err
		}
		if have := listedRemote(rep); have != want {
			return fmt.Errorf("%s knows %d remote endpoints, want %d", o.name, have, want)
		}
		return nil
	})
	return time.Now(), err
}

func listedRemote(rep *status.Report) int {
	if rep.Cluster == nil {
		return -1
	}
	return rep.Cluster.RemoteEndpoints
}

func (o *observer) stat() (procStat, error) { return readProcStat(o.h.Plugin().Pid()) }

// rxBytes is what the observer's underlay link received so far: its etcd
// traffic (nothing else crosses it here).
func (o *observer) rxBytes() (uint64, error) {
	nlh, closeNS, err := handleAt(o.h.NetNS().Path())
	if err != nil {
		return 0, err
	}
	defer closeNS()
	l, err := nlh.LinkByName(testbed.UnderlayHostLink)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Statistics.RxBytes, nil
}

// probe runs endpoint lifecycles on the observer's first network until ctx
// ends, a pause between them, recording each call's time.
func (o *observer) probe(ctx context.Context, s *samples) {
	n := o.nets[0].n
	for ctx.Err() == nil {
		if err := lifecycle(o.c, n, s.record); err != nil {
			s.mu.Lock()
			s.errors++
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// relists counts the plugin's "listing again" log lines so far (the peer
// watch starting over); the design of the time logs them at warn.
func (o *observer) relists() int {
	b, err := os.ReadFile(o.h.Plugin().LogPath())
	if err != nil {
		return -1
	}
	return strings.Count(string(b), "listing again")
}

// setUnderlay takes the observer's underlay link down or up; down also
// cuts its established connections to etcd (at etcdIP) at once (ss -K),
// so its client notices now rather than after its keep-alive timeout.
func (o *observer) setUnderlay(up bool, etcdIP string) error {
	state := "down"
	if up {
		state = "up"
	}
	if out, err := o.h.NetNS().TryExec("ip", "link", "set", testbed.UnderlayHostLink, state); err != nil {
		return fmt.Errorf("%s: link %s: %w: %s", o.name, state, err, out)
	}
	if up {
		return nil
	}
	if out, err := o.h.NetNS().TryExec("ss", "-K", "dst", etcdIP); err != nil {
		return fmt.Errorf("%s: ss -K: %w: %s", o.name, err, out)
	}
	return nil
}

// waitConnected polls every 20 ms until the observer has an established
// connection to etcd (at etcdIP) and returns when it saw it.
func (o *observer) waitConnected(etcdIP string, wait time.Duration) (time.Time, error) {
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out, err := o.h.NetNS().TryExec("ss", "-Htn", "state", "established", "dst", etcdIP)
		if err == nil && strings.TrimSpace(out) != "" {
			return time.Now(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%s: no connection to etcd within %v", o.name, wait)
}
