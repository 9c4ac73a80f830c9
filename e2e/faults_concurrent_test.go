package e2e

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/ownership/mark"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/store"
)

// TestFaultConcurrentKill (issue 7): 200 concurrent endpoint lifecycles on
// the plugin's socket, sent as dockerd sends them, with the plugin killed -9
// at a random moment of each round and started again at once; 20 rounds.
// No dockerd: the plugin runs in a namespace of its own, and a second
// namespace stands for the containers' sandboxes (the test moves each
// container end there after Join and back before Leave, as docker does).
//
// The clients behave as dockerd does (moby pkg/plugins and libnetwork): a
// call that found no plugin is retried with backoff for up to 30 s; a call
// that reached a plugin which died before answering is retried with an empty
// body (dockerd re-sends the request buffer the failed attempt drained), so
// it fails; a failed container start is rolled back (DeleteEndpoint,
// ReleaseAddress) and a container removal goes on past errors, as `docker rm
// -f` does. After every round the plugin's records, the kernel's links, the
// IPAM's endpoint addresses and what the clients hold must agree, no address
// may be held twice; at the end, everything deleted leaves nothing.
func TestFaultConcurrentKill(t *testing.T) {
	requirePlugin(t)
	const (
		rounds     = 20
		perRound   = 200             // lifecycles per round, all started at once
		keepRound  = 20              // of which keep their endpoint for later rounds
		killWithin = 3 * time.Second // a round takes 2-8 s: the kill lands in every phase
	)
	k := newKillBed(t)
	k.start()
	k.createNetwork("10.81.0.0/23")

	var total killStats
	start := time.Now()
	for round := 1; round <= rounds; round++ {
		rs := k.round(perRound, keepRound, time.Duration(mrand.Int64N(int64(killWithin))))
		total.add(rs)
		t.Logf("round %2d: %s", round, rs)
		findings, pending := k.converged(10 * time.Second)
		if len(findings) > 0 {
			t.Fatalf("round %d: plugin, kernel, IPAM and clients disagree:\n  %s\n%s", round,
				strings.Join(findings, "\n  "), k.traces(findings))
		}
		if len(pending) > 0 {
			t.Logf("round %2d: %d orphan(s) a lost reply left, for the plugin to collect after %v:\n  %s",
				round, len(pending), killOrphanGrace, strings.Join(pending, "\n  "))
		}
	}
	t.Logf("%d rounds in %v: %s", rounds, time.Since(start).Round(time.Millisecond), total.summary())

	// Everything deleted leaves nothing: no record, link, rule or address.
	k.teardownAll()
	if findings := k.empty(killOrphanGrace + 15*time.Second); len(findings) > 0 {
		t.Fatalf("after deleting everything:\n  %s", strings.Join(findings, "\n  "))
	}
}

// killOrphanGrace is the plugin's --orphan-grace (default 2 min): a reply
// the kill cut off leaves an address or an unjoined endpoint for nobody,
// which the plugin frees once it has stayed so this long. It must exceed
// the longest gap between docker's calls of one lifecycle (a CreateEndpoint
// queued behind 200 others plus retries took up to 13 s here), or the
// collection would free what a client is about to use.
const killOrphanGrace = 20 * time.Second

// killBed is the plugin in its namespace, the sandbox namespace and the
// clients' view of what they hold.
type killBed struct {
	t        *testing.T
	ns, sbNS *testbed.NetNS
	dir      string
	socket   string
	proc     *testbed.Process
	restarts []time.Duration // kill to Activate answering

	hostFd, sandFd netns.NsHandle

	c        *dockerLikeClient
	netID    string
	poolID   string
	gateway  string
	inFlight sync.Map // call path -> *atomic.Int64

	serveArgs []string                              // more flags for serve
	observe   func(path string, took time.Duration) // nil, or told of every call
	mu        sync.Mutex
	live      map[string]*killEndpoint // endpoint id -> what the client holds
	trace     map[string][]string      // endpoint id -> calls and their results
}

type killEndpoint struct {
	id, addr, peer string // addr in CIDR form as the IPAM answered
}

func newKillBed(t *testing.T) *killBed {
	t.Helper()
	k := &killBed{t: t, ns: testbed.NewNetNS(t), sbNS: testbed.NewNetNS(t), dir: t.TempDir(),
		live: map[string]*killEndpoint{}, trace: map[string][]string{}}
	k.socket = filepath.Join(k.dir, "vxbridge.sock")
	k.c = newDockerLikeClient(k.socket, &k.inFlight)
	var err error
	if k.hostFd, err = netns.GetFromPath(k.ns.Path()); err != nil {
		t.Fatal(err)
	}
	if k.sandFd, err = netns.GetFromPath(k.sbNS.Path()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		k.hostFd.Close()
		k.sandFd.Close()
		k.c.hc.CloseIdleConnections()
	})
	return k
}

// start runs the plugin and waits until it answers Plugin.Activate.
func (k *killBed) start() time.Duration {
	k.t.Helper()
	begin := time.Now()
	argv := append([]string{pluginBin, "serve", "--socket", k.socket, "--state-dir", filepath.Join(k.dir, "state"),
		"--orphan-grace", killOrphanGrace.String()}, k.serveArgs...)
	k.proc = k.ns.Start(k.t, filepath.Join(k.dir, "plugin.log"), argv...)
	err := testbed.Poll(30*time.Second, func() error {
		if k.proc.Exited() {
			return testbed.Permanent(fmt.Errorf("plugin exited: %v", k.proc.ExitErr()))
		}
		return activateOnly(k.socket)
	})
	if err != nil {
		k.t.Fatalf("plugin not ready: %v\n%s", err, tailLines(k.proc.Log(), 40))
	}
	return time.Since(begin)
}

func activateOnly(socket string) error {
	code, body, err := testbed.PluginCall(socket, "/Plugin.Activate", "")
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("HTTP %d: %s", code, body)
	}
	return err
}

// createNetwork sends what `docker network create -d vxbridge --ipam-driver
// vxbridge --subnet SUBNET` sends.
func (k *killBed) createNetwork(subnet string) {
	k.t.Helper()
	var pool struct{ PoolID, Pool string }
	if err := k.c.call("IpamDriver.RequestPool", map[string]any{"AddressSpace": "vxbridge-local", "Pool": subnet,
		"Options": map[string]string{}, "V6": false}, &pool); err != nil {
		k.t.Fatal(err)
	}
	var gw struct{ Address string }
	if err := k.c.call("IpamDriver.RequestAddress", map[string]any{"PoolID": pool.PoolID,
		"Options": map[string]string{"RequestAddressType": "com.docker.network.gateway"}}, &gw); err != nil {
		k.t.Fatal(err)
	}
	k.netID, k.poolID, k.gateway = randomHexID(), pool.PoolID, gw.Address
	if err := k.c.call("NetworkDriver.CreateNetwork", map[string]any{"NetworkID": k.netID,
		"Options":  map[string]any{"com.docker.network.generic": map[string]string{}, "com.docker.network.enable_ipv6": false},
		"IPv4Data": []map[string]any{{"AddressSpace": "vxbridge-local", "Pool": pool.Pool, "Gateway": gw.Address}},
		"IPv6Data": []any{}}, nil); err != nil {
		k.t.Fatal(err)
	}
}

// killStats sums up a round.
type killStats struct {
	lifecycles, kept, removed int
	startFailed, callErrors   int64
	inFlightAtKill            int64
	took, restart             time.Duration
	killAt                    time.Duration
}

func (s killStats) String() string {
	return fmt.Sprintf("%d lifecycles (%d endpoints kept, %d of earlier rounds removed) in %v; kill -9 at %v with %d calls in flight, ready again %v later; %d container starts failed and were rolled back, %d calls failed",
		s.lifecycles, s.kept, s.removed, s.took.Round(time.Millisecond), s.killAt.Round(time.Millisecond), s.inFlightAtKill,
		s.restart.Round(time.Millisecond), s.startFailed, s.callErrors)
}

func (s killStats) summary() string {
	return fmt.Sprintf("%d lifecycles (%d endpoints kept across rounds, %d of them removed in later rounds) in %v of rounds; %d calls in flight at the kills; slowest kill-to-ready %v; %d container starts failed and were rolled back; %d calls failed",
		s.lifecycles, s.kept, s.removed, s.took.Round(time.Millisecond), s.inFlightAtKill, s.restart.Round(time.Millisecond), s.startFailed, s.callErrors)
}

func (s *killStats) add(r killStats) {
	s.lifecycles += r.lifecycles
	s.kept += r.kept
	s.removed += r.removed
	s.startFailed += r.startFailed
	s.callErrors += r.callErrors
	s.inFlightAtKill += r.inFlightAtKill
	s.took += r.took
	s.restart = max(s.restart, r.restart)
}

// round runs n lifecycles at once (keep of them keep their endpoint),
// removes up to keep endpoints of earlier rounds meanwhile, and kills the
// plugin killAt after the start, starting it again at once.
func (k *killBed) round(n, keep int, killAt time.Duration) killStats {
	k.t.Helper()
	rs := killStats{lifecycles: n, killAt: killAt}
	var old []*killEndpoint
	k.mu.Lock()
	for _, ep := range k.live {
		if len(old) == keep {
			break
		}
		old = append(old, ep)
		delete(k.live, ep.id)
	}
	k.mu.Unlock()
	rs.removed = len(old)
	var failed, kept atomic.Int64
	errsBefore := k.c.errors.Load()
	var wg sync.WaitGroup
	begin := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ep, ok := k.up()
			switch {
			case !ok:
				failed.Add(1)
			case i < keep:
				k.mu.Lock()
				k.live[ep.id] = ep
				k.mu.Unlock()
				kept.Add(1)
			default:
				k.down(ep)
			}
		}()
	}
	for _, ep := range old {
		wg.Add(1)
		go func() { defer wg.Done(); k.down(ep) }()
	}
	time.Sleep(killAt)
	rs.inFlightAtKill = k.callsInFlight()
	if err := k.proc.Kill9(); err != nil {
		k.t.Fatal(err)
	}
	killed := time.Now()
	k.start()
	rs.restart = time.Since(killed)
	k.restarts = append(k.restarts, rs.restart)
	wg.Wait()
	rs.took = time.Since(begin)
	rs.startFailed = failed.Load()
	rs.kept = int(kept.Load())
	rs.callErrors = k.c.errors.Load() - errsBefore
	return rs
}

func (k *killBed) callsInFlight() int64 {
	var n int64
	k.inFlight.Range(func(_, v any) bool { n += v.(*atomic.Int64).Load(); return true })
	return n
}

// do makes one call for endpoint id and keeps it in the endpoint's trace.
func (k *killBed) do(id, path string, req, resp any) error {
	begin := time.Now()
	err := k.c.call(path, req, resp)
	if k.observe != nil {
		k.observe(path, time.Since(begin))
	}
	k.mu.Lock()
	k.trace[id] = append(k.trace[id], fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), path, err))
	k.mu.Unlock()
	return err
}

func (k *killBed) note(id, what string) {
	k.mu.Lock()
	k.trace[id] = append(k.trace[id], time.Now().Format("15:04:05.000")+" "+what)
	k.mu.Unlock()
}

// up is a container start as dockerd sends it: RequestAddress,
// CreateEndpoint, Join, then the container end moves into the sandbox. A
// failure rolls back what was made (dockerd's own rollback) and says false.
func (k *killBed) up() (*killEndpoint, bool) {
	ep := &killEndpoint{id: randomHexID()}
	var addr struct{ Address string }
	if err := k.do(ep.id, "IpamDriver.RequestAddress", map[string]any{"PoolID": k.poolID, "Options": map[string]string{}}, &addr); err != nil {
		return nil, false
	}
	ep.addr = addr.Address
	ids := map[string]any{"NetworkID": k.netID, "EndpointID": ep.id}
	if err := k.do(ep.id, "NetworkDriver.CreateEndpoint", map[string]any{"NetworkID": k.netID, "EndpointID": ep.id,
		"Interface": map[string]string{"Address": ep.addr}, "Options": map[string]any{}}, nil); err != nil {
		k.release(ep)
		return nil, false
	}
	var join struct{ InterfaceName struct{ SrcName string } }
	if err := k.do(ep.id, "NetworkDriver.Join", map[string]any{"NetworkID": k.netID, "EndpointID": ep.id,
		"SandboxKey": "/var/run/docker/netns/" + ep.id[:12], "Options": map[string]any{}}, &join); err != nil {
		k.do(ep.id, "NetworkDriver.DeleteEndpoint", ids, nil)
		k.release(ep)
		return nil, false
	}
	ep.peer = join.InterfaceName.SrcName
	if err := k.move(ep.peer, true); err != nil {
		k.note(ep.id, "move "+ep.peer+" into the sandbox: "+err.Error())
		k.down(ep)
		return nil, false
	}
	return ep, true
}

// down is `docker rm -f`'s share: the container end goes back to the host,
// then Leave, DeleteEndpoint and ReleaseAddress, each error logged by
// dockerd and passed over.
func (k *killBed) down(ep *killEndpoint) {
	if ep.peer != "" {
		_ = k.move(ep.peer, false)
	}
	ids := map[string]any{"NetworkID": k.netID, "EndpointID": ep.id}
	k.do(ep.id, "NetworkDriver.Leave", ids, nil)
	k.do(ep.id, "NetworkDriver.DeleteEndpoint", ids, nil)
	k.release(ep)
}

func (k *killBed) release(ep *killEndpoint) {
	a, err := netip.ParsePrefix(ep.addr)
	if err != nil {
		k.t.Errorf("IPAM answered %q: %v", ep.addr, err)
		return
	}
	k.do(ep.id, "IpamDriver.ReleaseAddress", map[string]string{"PoolID": k.poolID, "Address": a.Addr().String()}, nil)
}

// move puts the container end into the sandbox namespace (in) or back,
// as dockerd does after Join and before Leave. Each move has netlink
// sockets of its own, so moves run in parallel as dockerd's do.
func (k *killBed) move(name string, in bool) error {
	from, to := k.hostFd, k.sandFd
	if !in {
		from, to = to, from
	}
	nl, err := netlink.NewHandleAt(from)
	if err != nil {
		return err
	}
	defer nl.Close()
	l, err := nl.LinkByName(name)
	if err != nil {
		return err
	}
	return nl.LinkSetNsFd(l, int(to))
}

// teardownAll removes every endpoint the clients hold, then the network as
// `docker network rm` does (IPAM releases first, then DeleteNetwork).
func (k *killBed) teardownAll() {
	var wg sync.WaitGroup
	k.mu.Lock()
	for _, ep := range k.live {
		wg.Add(1)
		go func() { defer wg.Done(); k.down(ep) }()
	}
	k.live = map[string]*killEndpoint{}
	k.mu.Unlock()
	wg.Wait()
	gw, _ := netip.ParsePrefix(k.gateway)
	for _, c := range []struct {
		path string
		req  any
	}{
		{"IpamDriver.ReleaseAddress", map[string]string{"PoolID": k.poolID, "Address": gw.Addr().String()}},
		{"IpamDriver.ReleasePool", map[string]string{"PoolID": k.poolID}},
		{"NetworkDriver.DeleteNetwork", map[string]string{"NetworkID": k.netID}},
	} {
		if err := k.c.call(c.path, c.req, nil); err != nil {
			k.t.Errorf("network removal: %v", err)
		}
	}
}

// killView is one snapshot of the plugin's records, the kernel and the IPAM.
type killView struct {
	report    *status.Report
	links     map[string]string // name -> `ip -d -o link` line, plugin namespace
	sandbox   map[string]bool   // link names in the sandbox namespace
	rules     []string          // iptables rules tagged vxbridge:
	pools     []store.Pool
	addrs     map[string]map[netip.Addr]store.AddressKind
	recordsBy map[string]status.Endpoint
}

func (k *killBed) view() (*killView, error) {
	v := &killView{links: map[string]string{}, sandbox: map[string]bool{}, recordsBy: map[string]status.Endpoint{}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if v.report, err = status.Fetch(ctx, k.socket); err != nil {
		return nil, fmt.Errorf("plugin status: %w", err)
	}
	for _, ep := range v.report.Endpoints {
		v.recordsBy[ep.ID] = ep
	}
	out, err := k.ns.TryExec("ip", "-d", "-o", "link", "show")
	if err != nil {
		return nil, fmt.Errorf("ip link: %v: %s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.SplitN(line, ": ", 3); len(f) == 3 {
			name, _, _ := strings.Cut(f[1], "@")
			v.links[name] = line
		}
	}
	nl, err := netlink.NewHandleAt(k.sandFd)
	if err != nil {
		return nil, err
	}
	sl, err := nl.LinkList()
	nl.Close()
	if err != nil {
		return nil, err
	}
	for _, l := range sl {
		v.sandbox[l.Attrs().Name] = true
	}
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := k.ns.TryExec(tool)
		if err != nil {
			return nil, fmt.Errorf("%s: %v: %s", tool, err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if _, ok := ruleTag(line); ok {
				v.rules = append(v.rules, line)
			}
		}
	}
	lv := &leakView{addrs: map[string]map[netip.Addr]store.AddressKind{}}
	if err := lv.readIPAM(filepath.Join(k.dir, "state")); err != nil {
		return nil, err
	}
	v.pools, v.addrs = lv.pools, lv.addrs
	return v, nil
}

// converged polls until the plugin, kernel, IPAM and clients agree but for
// pending orphans, and returns the findings of the last look otherwise.
func (k *killBed) converged(within time.Duration) (findings, pending []string) {
	_ = testbed.Poll(within, func() error {
		v, err := k.view()
		if err != nil {
			findings, pending = []string{err.Error()}, nil
			return err
		}
		k.mu.Lock()
		findings, pending = k.disagreements(v)
		k.mu.Unlock()
		if len(findings) > 0 {
			return fmt.Errorf("%d finding(s)", len(findings))
		}
		return nil
	})
	return findings, pending
}

// disagreements compares the clients' live endpoints with the records, the
// links of both namespaces, the firewall and the IPAM. What a cut-off reply
// left for nobody and the orphan collection will free (an unjoined record
// no client holds, with its veth; an address neither a client nor a record
// holds) is pending, not a finding: the end of the test checks it went.
// Everything else is a finding, an address held twice above all. k.mu held.
func (k *killBed) disagreements(v *killView) (out, pending []string) {
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	addP := func(format string, args ...any) { pending = append(pending, fmt.Sprintf(format, args...)) }
	orphanIDs, orphanLinks := map[string]bool{}, map[string]bool{}
	for id, rec := range v.recordsBy {
		if k.live[id] == nil && !rec.Joined {
			orphanIDs[id] = true
			orphanLinks[rec.HostVeth] = true
			orphanLinks["vxc"+strings.TrimPrefix(rec.HostVeth, "vxh")] = true
		}
	}
	byAddr := map[netip.Addr]string{}
	for id, ep := range k.live {
		a := netip.MustParsePrefix(ep.addr).Addr()
		if other, dup := byAddr[a]; dup {
			add("address %s held by two live endpoints: %s and %s", a, shortID(id), shortID(other))
		}
		byAddr[a] = id
		rec, ok := v.recordsBy[id]
		switch {
		case !ok:
			add("endpoint %s (%s): the client holds it, the plugin has no record", shortID(id), ep.addr)
		case rec.IPv4 != ep.addr || !rec.Joined:
			add("endpoint %s: record says %s joined=%v, the client holds %s joined", shortID(id), rec.IPv4, rec.Joined, ep.addr)
		}
		if !v.sandbox[ep.peer] {
			add("endpoint %s: container end %s is not in the sandbox", shortID(id), ep.peer)
		}
	}
	recAddrs := map[netip.Addr]string{}
	for id, rec := range v.recordsBy {
		switch {
		case orphanIDs[id]:
			addP("endpoint record %s (veth %s, %s): never joined or left, no client holds it", shortID(id), rec.HostVeth, rec.IPv4)
		case k.live[id] == nil:
			add("endpoint record %s (veth %s, %s, joined=%v): no client holds it", shortID(id), rec.HostVeth, rec.IPv4, rec.Joined)
		}
		if p, err := netip.ParsePrefix(rec.IPv4); err == nil {
			if other, dup := recAddrs[p.Addr()]; dup {
				add("address %s recorded for two endpoints: %s and %s", p.Addr(), shortID(id), shortID(other))
			}
			recAddrs[p.Addr()] = id
		}
	}
	for _, p := range v.report.Problems() {
		add("plugin reports: %s", p)
	}
	// Links: exactly the network's bridge and the live endpoints' host ends.
	for name, line := range v.links {
		alias := linkAlias(line)
		o, marked := mark.ParseAlias(alias)
		switch {
		case marked && o.Kind == mark.Net && o.ID == k.netID, orphanLinks[name]:
		case marked && o.Kind == mark.Endpoint:
			if k.live[o.ID] == nil {
				add("veth %s (alias %s): no live endpoint", name, alias)
			}
		case strings.HasPrefix(alias, "vxbridge:"), strings.HasPrefix(name, "vxb-"), strings.HasPrefix(name, "vxh"), strings.HasPrefix(name, "vxc"):
			add("link %s (alias %q): not the network's bridge nor a live endpoint's", name, alias)
		}
	}
	for id, ep := range k.live {
		if rec, ok := v.recordsBy[id]; ok {
			if _, ok := v.links[rec.HostVeth]; !ok {
				add("endpoint %s (%s): host end %s is missing", shortID(id), ep.addr, rec.HostVeth)
			}
		}
	}
	for name := range v.sandbox {
		if strings.HasPrefix(name, "vxc") && !k.livePeer(name) {
			add("sandbox holds %s of no live endpoint", name)
		}
	}
	for _, line := range v.rules {
		if tag, _ := ruleTag(line); tag != k.netID {
			add("iptables rule of no live network or of an endpoint: %s", line)
		}
	}
	// IPAM: the gateway and exactly the live endpoints' addresses.
	for _, p := range v.pools {
		if p.ID != k.poolID {
			add("IPAM pool %s (%s): not the network's", p.ID, p.Prefix)
			continue
		}
		for a, kind := range v.addrs[p.ID] {
			if kind == store.KindGateway || byAddr[a] != "" {
				continue
			}
			if id := recAddrs[a]; id == "" || orphanIDs[id] {
				addP("IPAM address %s (%s) is taken but no live endpoint holds it", a, kind)
			} else {
				add("IPAM address %s (%s) is taken by endpoint record %s, which no client holds", a, kind, shortID(id))
			}
		}
		for a, id := range byAddr {
			if v.addrs[p.ID][a] == "" {
				add("endpoint %s holds %s, which the IPAM has free: it can be handed out twice", shortID(id), a)
			}
		}
	}
	sort.Strings(out)
	sort.Strings(pending)
	return out, pending
}

func (k *killBed) livePeer(name string) bool {
	for _, ep := range k.live {
		if ep.peer == name {
			return true
		}
	}
	return false
}

// traces prints the call history of the endpoints findings name.
func (k *killBed) traces(findings []string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var b strings.Builder
	for id, tr := range k.trace {
		for _, f := range findings {
			if strings.Contains(f, shortID(id)) {
				fmt.Fprintf(&b, "calls of endpoint %s:\n  %s\n", shortID(id), strings.Join(tr, "\n  "))
				break
			}
		}
	}
	fmt.Fprintf(&b, "plugin restarts at kill+%v\n--- plugin log (tail) ---\n%s", k.restarts, tailLines(k.proc.Log(), 40))
	return b.String()
}

// empty polls until nothing of vxbridge is left: no record, no link, no
// tagged rule, no pool.
func (k *killBed) empty(within time.Duration) []string {
	var last []string
	_ = testbed.Poll(within, func() error {
		v, err := k.view()
		if err != nil {
			last = []string{err.Error()}
			return err
		}
		last = nil
		for _, n := range v.report.Networks {
			last = append(last, "network record "+shortID(n.ID))
		}
		for _, ep := range v.report.Endpoints {
			last = append(last, "endpoint record "+shortID(ep.ID)+" "+ep.IPv4)
		}
		for name, line := range v.links {
			if a := linkAlias(line); strings.HasPrefix(a, "vxbridge:") || strings.HasPrefix(name, "vxb-") ||
				strings.HasPrefix(name, "vxh") || strings.HasPrefix(name, "vxc") {
				last = append(last, fmt.Sprintf("link %s (alias %q)", name, a))
			}
		}
		for name := range v.sandbox {
			if name != "lo" {
				last = append(last, "sandbox link "+name)
			}
		}
		last = append(last, v.rules...)
		for _, p := range v.pools {
			last = append(last, fmt.Sprintf("IPAM pool %s with %d addresses", p.ID, len(v.addrs[p.ID])))
		}
		if len(last) > 0 {
			return fmt.Errorf("%d left", len(last))
		}
		return nil
	})
	return last
}

// dockerLikeClient calls the plugin as dockerd's plugin client (moby
// pkg/plugins, Client.callWithRetry) does: it POSTs a bytes.Buffer and, on
// a transport error, retries with exponential backoff until 30 s have
// passed, building each retry on the same buffer. A dial error leaves the
// buffer whole; an attempt that reached the plugin drained it, so its retry
// carries an empty body. The backoff starts at 100 ms instead of dockerd's
// 1 s, to keep rounds short; the 30 s bound is dockerd's.
type dockerLikeClient struct {
	hc       *http.Client
	inFlight *sync.Map
	errors   atomic.Int64
}

func newDockerLikeClient(socket string, inFlight *sync.Map) *dockerLikeClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 32,
	}
	return &dockerLikeClient{hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}, inFlight: inFlight}
}

func (c *dockerLikeClient) call(path string, req, resp any) error {
	err := c.callWithRetry(path, req, resp)
	if err != nil {
		c.errors.Add(1)
	}
	return err
}

func (c *dockerLikeClient) callWithRetry(path string, req, resp any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	buf := bytes.NewBuffer(b)
	n, _ := c.inFlight.LoadOrStore(path, new(atomic.Int64))
	counter := n.(*atomic.Int64)
	start := time.Now()
	for retries := 0; ; retries++ {
		r, err := http.NewRequest(http.MethodPost, "http://plugin/"+path, buf)
		if err != nil {
			return err
		}
		r.Header.Set("Accept", "application/vnd.docker.plugins.v1.2+json")
		counter.Add(1)
		res, err := c.hc.Do(r)
		counter.Add(-1)
		if err == nil {
			return decodePluginReply(path, res, resp)
		}
		wait := 100 * time.Millisecond << retries
		if time.Since(start)+wait >= 30*time.Second {
			return fmt.Errorf("%s: %w", path, err)
		}
		time.Sleep(wait)
	}
}

// decodePluginReply reads a reply as dockerd does: a non-200 status or an
// Err/Error field is a failure.
func decodePluginReply(path string, res *http.Response, resp any) error {
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("%s: read reply: %w", path, err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", path, res.StatusCode, bytes.TrimSpace(b))
	}
	var e struct{ Err, Error string }
	if json.Unmarshal(b, &e) == nil && (e.Err != "" || e.Error != "") {
		return fmt.Errorf("%s: %s", path, cmp.Or(e.Err, e.Error))
	}
	if resp == nil {
		return nil
	}
	if err := json.Unmarshal(b, resp); err != nil {
		return fmt.Errorf("%s: decode %q: %w", path, b, err)
	}
	return nil
}

// randomHexID is a docker-style 64-hex id.
func randomHexID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
