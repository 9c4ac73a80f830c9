package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// Fault scenarios of etcd (issue 7): etcd stopped, hung and partitioned from
// one host for longer than the host TTL. Each runs on a multi-host testbed
// of its own (faultCluster) with a short TTL, and ends with LEAKS() on every
// host and a check that etcd holds no stale key.

// faultTTL is the plugins' --host-ttl in the fault scenarios: short, so an
// outage "longer than the TTL" stays a matter of seconds.
const faultTTL = xTTL

// faultCluster is a multi-host testbed for the fault scenarios: the
// underlay with etcd, hosts with dockerd and a plugin each, the cross-host
// network xnet everywhere and container c<i> on host i.
type faultCluster struct {
	*multiHost
	pluginEtcd string // the plugins' --etcd-endpoints: etcd itself, or a relay in front of it
}

// newFaultBed makes the underlay and starts etcd; addHosts adds the hosts.
// Between the two a test may put something in front of etcd (pluginEtcd).
func newFaultBed(t *testing.T) *faultCluster {
	t.Helper()
	requirePlugin(t)
	testbed.EnsureCommands(t, map[string]string{"etcd": "etcd-server", "etcdctl": "etcd-client"})
	m := &multiHost{t: t, ul: testbed.NewUnderlay(t), vteps: map[*testbed.Host]string{}}
	m.etcdURL = "http://" + m.ul.IP + ":2379"
	m.etcdDir = t.TempDir()
	m.startEtcd(t)
	return &faultCluster{multiHost: m, pluginEtcd: m.etcdURL}
}

// addHosts adds n hosts named prefix1..prefixN, each with the plugin, xnet
// and one container, and waits until every host has programmed the others.
func (fc *faultCluster) addHosts(t *testing.T, prefix string, n int) {
	t.Helper()
	for i := range n {
		h := testbed.NewHost(t, testbed.HostOptions{Name: fmt.Sprintf("%s%d", prefix, i+1)})
		fc.vteps[h] = fc.ul.Attach(t, h)
		h.ImportImage(t)
		fc.startPlugin(t, h)
		fc.hosts = append(fc.hosts, h)
	}
	fc.oneContainerEach(t, 15*time.Second)
	for i, c := range fc.cs {
		to := fc.cs[(i+1)%len(fc.cs)]
		waitPing(t, c.h, c.name, to.ip4)
	}
}

// startPlugin starts (or restarts) h's plugin with the fault TTL.
func (fc *faultCluster) startPlugin(t *testing.T, h *testbed.Host) {
	t.Helper()
	h.StartPlugin(t, pluginBin, "--etcd-endpoints", fc.pluginEtcd, "--vtep-interface", testbed.UnderlayHostLink,
		"--host-ttl", faultTTL.String(), "--reconcile-interval", "2s")
}

// requireNoLeaksAnywhere is LEAKS() on every host, and its cross-host
// rule (FDB and neighbour entries) over all of them.
func (fc *faultCluster) requireNoLeaksAnywhere(t *testing.T) {
	t.Helper()
	for _, h := range fc.hosts {
		requireNoLeaks(t, h, 15*time.Second)
	}
	requireNoCrossHostLeaks(t, fc.hosts, 15*time.Second)
}

// pluginHostID is the id h's plugin files its etcd records under.
func pluginHostID(t *testing.T, h *testbed.Host) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.PluginStateDir(), "host-id"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// etcdKV is a key of `etcdctl get -w json` (keys and values base64 there).
type etcdKV struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value"`
	Lease int64  `json:"lease"`
}

func (fc *faultCluster) etcdctl(args ...string) (string, error) {
	return fc.ul.NetNS().TryExec("etcdctl", append([]string{"--endpoints", fc.etcdURL, "--command-timeout", "3s"}, args...)...)
}

func (fc *faultCluster) etcdKeys() ([]etcdKV, error) {
	out, err := fc.etcdctl("get", "--prefix", "/vxbridge/", "-w", "json")
	if err != nil {
		return nil, fmt.Errorf("etcdctl get: %v: %s", err, out)
	}
	var resp struct {
		Kvs []etcdKV `json:"kvs"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		return nil, fmt.Errorf("decode etcdctl get: %v", err)
	}
	return resp.Kvs, nil
}

// staleKeys compares etcd with the live cluster: exactly one host record,
// one membership of xnet's VNI (in the host's memberships/ and in the network's own
// records) and one record per live endpoint (in the host's range and in
// the network's) for every host, all on that host's one lease, which etcd still has; address blocks
// held by live hosts only, each host's claims (hostblocks/) on its lease; nothing else under the prefix but the network's
// identity. It returns the findings (empty: no stale key) and each host's
// lease.
func (fc *faultCluster) staleKeys(t *testing.T) ([]string, map[string]int64) {
	t.Helper()
	ids := map[string]*testbed.Host{}
	want := map[string]string{} // key -> owning host id
	for _, h := range fc.hosts {
		id := pluginHostID(t, h)
		ids[id] = h
		want["/vxbridge/hosts/"+id] = id
		want[fmt.Sprintf("/vxbridge/memberships/%s/%d", id, xVNI)] = id
		want[fmt.Sprintf("/vxbridge/net/%d/members/%s", xVNI, id)] = id
		out, err := h.Docker("network", "inspect", xNet)
		if err != nil {
			return []string{fmt.Sprintf("%s: docker network inspect: %v: %s", h.Name, err, out)}, nil
		}
		var nets []dockerNet
		if err := json.Unmarshal([]byte(out), &nets); err != nil || len(nets) != 1 {
			return []string{fmt.Sprintf("%s: decode network inspect: %v", h.Name, err)}, nil
		}
		for _, c := range nets[0].Containers {
			want["/vxbridge/endpoints/"+id+"/"+c.EndpointID] = id
			want[fmt.Sprintf("/vxbridge/net/%d/eps/%s/%s", xVNI, id, c.EndpointID)] = id
		}
		for _, key := range hostRecordKeys(h, id) { // the host's own address of the network
			want[key] = id
		}
	}
	kvs, err := fc.etcdKeys()
	if err != nil {
		return []string{err.Error()}, nil
	}
	var found []string
	var claims []etcdKV // block claims, their owners as values
	leases := map[string]int64{}
	have := map[string]bool{}
	for _, kv := range kvs {
		key := string(kv.Key)
		have[key] = true
		owner, ok := want[key]
		switch {
		case ok:
			if kv.Lease == 0 {
				found = append(found, key+": not on a lease")
			} else if l, seen := leases[owner]; seen && l != kv.Lease {
				found = append(found, fmt.Sprintf("%s: on lease %x, the host's other keys on %x", key, kv.Lease, l))
			}
			leases[owner] = kv.Lease
		case strings.HasPrefix(key, "/vxbridge/hostblocks/"): // a host's claim of a block: checked below
			owner, _, _ := strings.Cut(strings.TrimPrefix(key, "/vxbridge/hostblocks/"), "/")
			claims = append(claims, etcdKV{Key: kv.Key, Value: []byte(owner), Lease: kv.Lease})
		case strings.HasPrefix(key, "/vxbridge/blocks/"):
			if ids[string(kv.Value)] == nil {
				found = append(found, fmt.Sprintf("%s: held by %q, no live host", key, kv.Value))
			}
		case key == fmt.Sprintf("/vxbridge/networks/%d", xVNI) || strings.HasPrefix(key, "/vxbridge/subnets/"):
			if kv.Lease != 0 {
				found = append(found, key+": a network's identity is on a lease")
			}
		default:
			found = append(found, fmt.Sprintf("stale key %s (lease %x): %s", key, kv.Lease, kv.Value))
		}
	}
	for key := range want {
		if !have[key] {
			found = append(found, "missing key "+key)
		}
	}
	for _, kv := range claims {
		if owner := string(kv.Value); ids[owner] == nil || kv.Lease != leases[owner] {
			found = append(found, fmt.Sprintf("%s: on lease %x, not on a live host's (%x)", kv.Key, kv.Lease, leases[owner]))
		}
	}
	for id, l := range leases {
		if out, err := fc.etcdctl("lease", "timetolive", fmt.Sprintf("%x", l)); err != nil || strings.Contains(out, "expired") {
			found = append(found, fmt.Sprintf("lease %x of host %s: %v %s", l, ids[id].Name, err, strings.TrimSpace(out)))
		}
	}
	sort.Strings(found)
	return found, leases
}

// requireNoStaleKeys polls staleKeys until it is clean and returns the
// hosts' leases.
func (fc *faultCluster) requireNoStaleKeys(t *testing.T, within time.Duration) map[string]int64 {
	t.Helper()
	var found []string
	var leases map[string]int64
	err := testbed.Poll(within, func() error {
		if found, leases = fc.staleKeys(t); len(found) > 0 {
			return fmt.Errorf("%d finding(s)", len(found))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("etcd does not match the live cluster after %v:\n  %s", within, strings.Join(found, "\n  "))
	}
	return leases
}

// leaseChanges says which hosts hold another lease than before.
func (fc *faultCluster) leaseChanges(t *testing.T, before, after map[string]int64) string {
	t.Helper()
	var changed []string
	for _, h := range fc.hosts {
		id := pluginHostID(t, h)
		if before[id] != after[id] {
			changed = append(changed, fmt.Sprintf("%s %x->%x", h.Name, before[id], after[id]))
		}
	}
	if len(changed) == 0 {
		return "every host kept its lease"
	}
	return "new lease on " + strings.Join(changed, ", ")
}

// etcdAway is the scenario of an etcd that is away for 3 TTLs: stopped
// (away, then started with its data) or hung (SIGSTOP, then SIGCONT).
// Throughout, traffic between existing containers on different hosts goes
// on without loss and no host drops another's entries; containers start
// meanwhile, in bounded time; after etcd is back, the new containers are
// programmed everywhere and reachable across, and etcd holds no stale key.
func etcdAway(t *testing.T, prefix string, away, back func(t *testing.T, fc *faultCluster)) {
	fc := newFaultBed(t)
	fc.addHosts(t, prefix, 2)
	h1, h2 := fc.hosts[0], fc.hosts[1]
	c1, c2 := fc.cs[0], fc.cs[1]
	leases := fc.requireNoStaleKeys(t, 2*faultTTL)

	const outage = 3 * faultTTL
	watch := fc.watchTables(t, map[*testbed.Host][]ctr{h1: {c2}, h2: {c1}}, 200*time.Millisecond)
	pings := []*pingStream{
		startPings(h1, c1.name, c2.ip4, 100*time.Millisecond, outage+15*time.Second),
		startPings(h2, c2.name, c1.ip6, 100*time.Millisecond, outage+15*time.Second),
	}
	time.Sleep(time.Second) // traffic before the fault, so the first loss would show
	logAt := logOffsets(fc.hosts...)
	away(t, fc)
	gone := time.Now()

	var fresh []ctr
	for i, h := range fc.hosts {
		start := time.Now()
		c := fc.run(t, h, fmt.Sprintf("n%d", i+1))
		took := time.Since(start)
		t.Logf("%s: docker run with etcd away took %v", h.Name, took.Round(time.Millisecond))
		if took > 20*time.Second {
			t.Errorf("%s: docker run with etcd away took %v: container start waits for etcd", h.Name, took)
		}
		waitPing(t, h, c.name, fc.cs[i].ip4) // a local peer works at once
		fresh = append(fresh, c)
	}
	time.Sleep(time.Until(gone.Add(outage))) // the fault lasts 3 TTLs
	back(t, fc)
	returned := time.Now()
	all := append(append([]ctr{}, fc.cs...), fresh...)
	for _, h := range fc.hosts {
		fc.waitProgrammed(t, h, 30*time.Second, all...)
	}
	t.Logf("converged %v after etcd came back (away %v, TTL %v)", time.Since(returned).Round(time.Millisecond), outage, faultTTL)
	waitPing(t, h1, c1.name, fresh[1].ip4)
	waitPing(t, h2, c2.name, fresh[0].ip6)

	for _, p := range pings {
		p.requireNoLoss(t)
	}
	watch.requireNoMiss(t)
	requireNoPeerDeletions(t, logAt)
	for _, h := range fc.hosts {
		t.Logf("%s: the plugin's etcd events during the fault:\n  %s", h.Name, strings.Join(etcdEvents(h, logAt[h]), "\n  "))
	}
	after := fc.requireNoStaleKeys(t, 2*faultTTL+5*time.Second)
	t.Logf("etcd keys match the live cluster; %s", fc.leaseChanges(t, leases, after))
	fc.requireNoLeaksAnywhere(t)
}

// (e1) etcd stopped for 3 TTLs, then started again on its data.
func TestFaultEtcdStopped(t *testing.T) {
	etcdAway(t, "es",
		func(t *testing.T, fc *faultCluster) {
			if err := fc.etcd.Stop(); err != nil {
				t.Fatal(err)
			}
		},
		func(t *testing.T, fc *faultCluster) { fc.startEtcd(t) })
}

// (e2) etcd hung (SIGSTOP) for 3 TTLs, then SIGCONT: its connections stay
// open and nothing answers on them.
func TestFaultEtcdHung(t *testing.T) {
	etcdAway(t, "eh",
		func(t *testing.T, fc *faultCluster) {
			p := fc.etcd
			t.Cleanup(func() { p.Signal(syscall.SIGCONT) }) // before etcd's own cleanup stops it
			if err := p.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
		},
		func(t *testing.T, fc *faultCluster) {
			if err := fc.etcd.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
		})
}

// (e3) One host cut off from etcd alone (its packets to etcd's port
// dropped in its namespace; the underlay and the other hosts still reach it)
// for 3 TTLs. Its lease runs out, so the others drop its entries: that is
// correct, and the time it takes is measured. The cut-off host keeps its
// view of the others and its local traffic. Healed, it registers again and
// the others learn its endpoints again; etcd holds no stale key.
func TestFaultEtcdPartition(t *testing.T) {
	fc := newFaultBed(t)
	fc.addHosts(t, "ep", 3)
	h1, h2, h3 := fc.hosts[0], fc.hosts[1], fc.hosts[2]
	c3b := fc.run(t, h3, "c3b")
	local := append(append([]ctr{}, fc.cs...), c3b)
	for _, h := range fc.hosts {
		fc.waitProgrammed(t, h, 15*time.Second, local...)
	}
	waitPing(t, h3, "c3", c3b.ip4)
	fc.requireNoStaleKeys(t, 2*faultTTL)

	const outage = 3 * faultTTL
	c1, c2, c3 := fc.cs[0], fc.cs[1], fc.cs[2]
	watch := fc.watchTables(t, map[*testbed.Host][]ctr{h3: {c1, c2}, h1: {c2}, h2: {c1}}, 200*time.Millisecond)
	pings := []*pingStream{
		startPings(h3, c3.name, c3b.ip4, 100*time.Millisecond, outage+10*time.Second),
		startPings(h1, c1.name, c2.ip4, 100*time.Millisecond, outage+10*time.Second),
	}
	time.Sleep(time.Second)
	logAt := logOffsets(h3) // the cut-off host must not flush the others
	rule := []string{"OUTPUT", "-p", "tcp", "-d", fc.ul.IP, "--dport", "2379", "-j", "DROP"}
	h3.Exec(t, "iptables", append([]string{"-I"}, rule...)...)
	healed := false
	t.Cleanup(func() {
		if !healed {
			h3.TryExec("iptables", append([]string{"-D"}, rule...)...)
		}
	})
	cut := time.Now()
	for _, h := range []*testbed.Host{h1, h2} {
		fc.waitProgrammed(t, h, faultTTL+10*time.Second, c1, c2)
		t.Logf("%s dropped the cut-off %s's entries %v after the cut (TTL %v)", h.Name, h3.Name, time.Since(cut).Round(time.Millisecond), faultTTL)
	}
	if err := ping(h1, c1.name, c3.ip4); err == nil {
		t.Logf("%s still reaches %s on the cut-off host", c1.name, c3.name)
	} else {
		t.Logf("as expected, %s no longer reaches %s on the cut-off host (its entries are gone)", c1.name, c3.name)
	}
	time.Sleep(time.Until(cut.Add(outage)))

	h3.Exec(t, "iptables", append([]string{"-D"}, rule...)...)
	healed = true
	back := time.Now()
	for _, h := range fc.hosts {
		fc.waitProgrammed(t, h, 30*time.Second, local...)
		t.Logf("%s holds every endpoint again %v after the heal", h.Name, time.Since(back).Round(time.Millisecond))
	}
	waitPing(t, h1, c1.name, c3.ip4)
	waitPing(t, h3, c3.name, c2.ip6)
	c3n := fc.run(t, h3, "c3n")
	local = append(local, c3n)
	for _, h := range fc.hosts {
		fc.waitProgrammed(t, h, 10*time.Second, local...)
	}
	waitPing(t, h2, c2.name, c3n.ip4)

	for _, p := range pings {
		p.requireNoLoss(t)
	}
	watch.requireNoMiss(t)
	requireNoPeerDeletions(t, logAt)
	fc.requireNoStaleKeys(t, 2*faultTTL+5*time.Second)
	fc.requireNoLeaksAnywhere(t)
}
