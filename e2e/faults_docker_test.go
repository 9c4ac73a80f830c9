package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/ownership/mark"
)

// Fault scenarios around docker itself (issue 7): interfaces that are in
// the way of the names the plugin picks, and dockerd dying under its
// containers, with and without --live-restore. Results are tabled in
// RELIABILITY.md.

// (h) A pre-existing interface carries the name the plugin wants for an
// endpoint's veth (host end vxh+12 hex of the endpoint id, container end
// vxc+12 hex). The plugin is driven on its socket, as docker would, with
// chosen endpoint ids. Each CreateEndpoint must fail with an error naming
// the interface in the way; a foreign interface (no vxbridge alias) must be
// left exactly as it was (not adopted: no alias, no master, same index; not
// deleted: also not by DeleteEndpoint of that id, nor by the reconciler
// after a plugin restart); nothing of the failed endpoint may stay; once
// the interface is gone the same id works. A veth carrying the vxbridge
// alias of an endpoint that has no record is vxbridge's by the ownership
// rule (the alias): it is refused too (never adopted for another id), LEAKS()
// reports it, and the restarted plugin's reconciler deletes it.
func TestFaultInterfaceNameTaken(t *testing.T) {
	h := faultHost(t, "fh")
	createNetwork(t, h, "fh1", "-d", testbed.PluginName, "--subnet", "10.78.50.0/24")
	netID := strings.TrimSpace(h.MustDocker(t, "network", "inspect", "-f", "{{.Id}}", "fh1"))

	type clash struct {
		name   string // what the test calls it
		epID   string
		peer   bool     // the clash is the container end's name, not the host end's
		create []string // `ip link add NAME` arguments
		alias  string   // set on the interface when not ""
		owned  bool     // carries a vxbridge alias: an orphan of vxbridge's
		link   string   // the interface in the way, named like the plugin's
	}
	ep := func(prefix string) string { return prefix + strings.Repeat("0", 64-len(prefix)) }
	orphanAlias := ownMark(t, h, mark.Endpoint, ep("f1c6")) // what this plugin's crash would leave
	clashes := []clash{
		{name: "bridge with the host end's name", epID: ep("f1a5"), create: []string{"type", "bridge"}},
		{name: "foreign veth with the host end's name", epID: ep("f1b5"), create: []string{"type", "veth", "peer", "name", "vxtpeerb5"}},
		{name: "veth with the host end's name and another endpoint's alias", epID: ep("f1c5"),
			create: []string{"type", "veth", "peer", "name", "vxtpeerc5"}, alias: orphanAlias, owned: true},
		{name: "bridge with the container end's name", epID: ep("f1d5"), peer: true, create: []string{"type", "bridge"}},
	}
	for i := range clashes {
		c := &clashes[i]
		c.link = "vxh" + c.epID[:12]
		if c.peer {
			c.link = "vxc" + c.epID[:12]
		}
		link := c.link
		t.Cleanup(func() { h.TryExec("ip", "link", "del", link) })
		h.Exec(t, "ip", append([]string{"link", "add", c.link}, c.create...)...)
		if c.alias != "" {
			h.Exec(t, "ip", "link", "set", "dev", c.link, "alias", c.alias)
		}
	}
	iptBefore := testbed.IPTablesSave(t, h)
	before := linkState(t, h)

	// call POSTs to the plugin as docker does and returns the reply's
	// error ("" for success).
	call := func(path, body string) string {
		t.Helper()
		code, out, err := testbed.PluginCall(h.PluginSocket(), path, body)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var reply struct{ Err string }
		if err := json.Unmarshal([]byte(out), &reply); err != nil || code != http.StatusOK && reply.Err == "" {
			return fmt.Sprintf("HTTP %d: %s", code, out)
		}
		return reply.Err
	}
	createEP := func(id, addr string) string {
		return call("/NetworkDriver.CreateEndpoint", fmt.Sprintf(
			`{"NetworkID":%q,"EndpointID":%q,"Interface":{"Address":%q,"AddressIPv6":"","MacAddress":""},"Options":{}}`, netID, id, addr))
	}
	deleteEP := func(id string) {
		t.Helper()
		if e := call("/NetworkDriver.DeleteEndpoint", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q}`, netID, id)); e != "" {
			t.Errorf("DeleteEndpoint %s: %s", id[:12], e)
		}
	}
	for i, c := range clashes {
		e := createEP(c.epID, fmt.Sprintf("10.78.50.%d/24", 10+i))
		t.Logf("%s: CreateEndpoint refused: %s", c.name, e)
		if e == "" {
			t.Errorf("%s: CreateEndpoint succeeded", c.name)
			deleteEP(c.epID)
			continue
		}
		if !strings.Contains(e, `"`+c.link+`"`) {
			t.Errorf("%s: error does not name the interface %q: %s", c.name, c.link, e)
		}
		// docker does not send DeleteEndpoint for a failed create, but a
		// restarting dockerd may send one for any id: it must not touch the
		// interface either.
		deleteEP(c.epID)
	}
	checkUntouched := func(when string, restarted bool) {
		t.Helper()
		after := linkState(t, h)
		for _, c := range clashes {
			switch {
			case c.owned && restarted:
				if line, ok := after[c.link]; ok {
					t.Errorf("%s: the orphan %s with a vxbridge alias is still there: %s", when, c.link, line)
				}
			case c.owned && after[c.link] == "":
				// The running plugin's reconciler may remove the orphan
				// already (the foreign bridges the test made trigger one).
				t.Logf("%s: the running plugin's reconciler removed the orphan %s", when, c.link)
			case after[c.link] != before[c.link]:
				t.Errorf("%s: %s changed:\n before %s\n after  %s", when, c.link, before[c.link], after[c.link])
			}
		}
		for name, line := range after {
			if _, ok := before[name]; !ok {
				t.Errorf("%s: a new link appeared: %s", when, line)
			}
		}
		if got := testbed.IPTablesSave(t, h); got != iptBefore {
			t.Errorf("%s: iptables changed:\n%s", when, lineDiff(iptBefore, got))
		}
		found := leaks(t, h)
		if !restarted {
			// Before the restart the only finding is the orphan.
			want := fmt.Sprintf("veth %s (alias %s): no live endpoint", clashes[2].link, orphanAlias)
			if _, there := linkState(t, h)[clashes[2].link]; !there && len(found) == 0 {
				return // removed by the reconciler: see above
			}
			if len(found) != 1 || found[0] != want {
				t.Errorf("%s: LEAKS() = %q, want only %q", when, found, want)
			}
			return
		}
		if len(found) > 0 {
			t.Errorf("%s: LEAKS():\n  %s", when, strings.Join(found, "\n  "))
		}
	}
	checkUntouched("after the refused creates", false)

	// A restarted plugin reconciles: it must not take foreign links for its
	// own (they carry no vxbridge alias, or one of no record).
	if err := h.Plugin().Kill9(); err != nil {
		t.Fatal(err)
	}
	h.StartPlugin(t, pluginBin) // it reconciles before it serves: done when this returns
	checkUntouched("after a plugin restart", true)

	// The interfaces gone, the same ids work: the refusals were the clash.
	for _, c := range clashes {
		if !c.owned {
			h.Exec(t, "ip", "link", "del", c.link)
		}
	}
	for i, c := range clashes {
		if e := createEP(c.epID, fmt.Sprintf("10.78.50.%d/24", 10+i)); e != "" {
			t.Errorf("%s: CreateEndpoint after removing the clash: %s", c.name, e)
		}
		deleteEP(c.epID)
	}
	runContainer(t, h, "fhc", "fh1")
	waitPing(t, h, "fhc", "10.78.50.1")
	requireNoLeaks(t, h, 10*time.Second)
}

// containerPid is the host pid of the container's init process (0 when it
// is not running).
func containerPid(t *testing.T, h *testbed.Host, name string) int {
	t.Helper()
	var pid int
	fmt.Sscan(strings.TrimSpace(h.MustDocker(t, "inspect", "-f", "{{.State.Pid}}", name)), &pid)
	return pid
}

func pidAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

// waitRunningOn waits until the container runs with an address on network
// and reaches addr, and returns its address.
func waitRunningOn(t *testing.T, h *testbed.Host, name, network, prefix, addr string, within time.Duration) string {
	t.Helper()
	var ip string
	testbed.WaitFor(t, within, func() error {
		out, err := h.Docker("inspect", "-f", fmt.Sprintf(`{{.State.Running}} {{with index .NetworkSettings.Networks %q}}{{.IPAddress}}{{end}}`, network), name)
		f := strings.Fields(out)
		if err != nil || len(f) != 2 || f[0] != "true" || !strings.HasPrefix(f[1], prefix) {
			return errorf("%s: %v %s", name, err, out)
		}
		ip = f[1]
		return ping(h, name, addr)
	})
	return ip
}

// noEndpointExists fails when dockerd or a docker command reported the
// error users meet after a crash.
func noEndpointExists(t *testing.T, h *testbed.Host, outputs ...string) {
	t.Helper()
	for _, s := range append(outputs, h.Dockerd().Log()) {
		for _, line := range strings.Split(s, "\n") {
			if strings.Contains(line, "already exists") && strings.Contains(line, "endpoint") {
				t.Errorf("%s: %s", h.Name, strings.TrimSpace(line))
			}
		}
	}
}

// (e) dockerd is killed with -9 without --live-restore. Its containerd
// dies with it (dockerd starts it with Pdeathsig SIGKILL); the containers'
// shims and processes live on, but the restarted dockerd's new containerd
// cannot reach them, so docker counts them dead: it cleans up their
// sandboxes (Leave/DeleteEndpoint to the plugin) and starts the ones with
// --restart always again, with new endpoints. They must come back
// connected (their --ip kept), the container without a restart policy must
// stay stopped and start cleanly later, no "endpoint ... already exists",
// and LEAKS() empty.
func TestFaultDockerdKill9(t *testing.T) {
	h := faultHost(t, "fk")
	createNetwork(t, h, "fk1", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.78.60.0/24")
	runContainer(t, h, "fkr1", "fk1", "--restart", "always")
	runContainer(t, h, "fkr2", "fk1", "--restart", "always", "--ip", "10.78.60.50")
	runContainer(t, h, "fkonce", "fk1")
	waitPing(t, h, "fkr1", "10.78.60.50")
	requireNoLeaks(t, h, 10*time.Second)
	oldPids := map[string]int{}
	for _, n := range []string{"fkr1", "fkr2", "fkonce"} {
		oldPids[n] = containerPid(t, h, n)
	}
	containerdPid, _ := readPid(h.Dir() + "/exec/containerd/containerd.pid")

	if err := h.Dockerd().Kill9(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// What dies with dockerd: its containerd at once; the containers?
	if containerdPid > 0 {
		if err := testbed.Poll(10*time.Second, func() error {
			if pidAlive(containerdPid) {
				return errorf("containerd pid %d alive", containerdPid)
			}
			return nil
		}); err != nil {
			t.Errorf("dockerd's containerd outlived dockerd: %v", err)
		} else {
			t.Logf("dockerd's containerd (pid %d) died with dockerd", containerdPid)
		}
	}
	var alive []string
	for n, pid := range oldPids {
		if pidAlive(pid) {
			alive = append(alive, fmt.Sprintf("%s (pid %d)", n, pid))
		}
	}
	t.Logf("container processes still running %v after dockerd's kill -9: %v", time.Since(killed).Round(time.Millisecond), alive)

	start := time.Now()
	h.StartDockerd(t)
	t.Logf("dockerd ready %v after its restart", time.Since(start).Round(time.Millisecond))
	ip1 := waitRunningOn(t, h, "fkr1", "fk1", "10.78.60.", "10.78.60.1", 60*time.Second)
	ip2 := waitRunningOn(t, h, "fkr2", "fk1", "10.78.60.", "10.78.60.1", 60*time.Second)
	t.Logf("--restart always containers running and connected %v after dockerd's restart (fkr1 %s, fkr2 %s)",
		time.Since(start).Round(time.Millisecond), ip1, ip2)
	if ip2 != "10.78.60.50" {
		t.Errorf("fkr2 came back with %s, want its --ip 10.78.60.50", ip2)
	}
	waitPing(t, h, "fkr1", ip2)
	waitPing(t, h, "fkr2", ip1)
	for n, pid := range map[string]int{"fkr1": oldPids["fkr1"], "fkr2": oldPids["fkr2"]} {
		if containerPid(t, h, n) == pid {
			t.Errorf("%s kept pid %d: not restarted, but the docker without live-restore cannot have taken it back", n, pid)
		}
	}
	// The old instances are orphans now (their shims outlived containerd,
	// and the new containerd cannot reach them: docker's leak, swept at
	// teardown). They must not keep a network: the plugin deleted their
	// endpoints' veths (docker's sandbox clean-up at start), so no address
	// of the network is held twice.
	var orphans []string
	for n, pid := range oldPids {
		if !pidAlive(pid) {
			continue
		}
		orphans = append(orphans, fmt.Sprintf("%s (pid %d)", n, pid))
		out, err := run("nsenter", "-t", fmt.Sprint(pid), "-n", "ip", "-o", "addr", "show")
		if err != nil {
			continue // it ended meanwhile
		}
		if strings.Contains(out, "10.78.60.") || strings.Contains(out, "eth0") {
			t.Errorf("orphaned old instance of %s (pid %d) still has its network:\n%s", n, pid, out)
		}
	}
	t.Logf("old instances still running (orphaned) after dockerd's restart: %v; none holds a network address", orphans)
	if st := strings.TrimSpace(h.MustDocker(t, "inspect", "-f", "{{.State.Status}}", "fkonce")); st == "running" {
		t.Errorf("fkonce (no restart policy) is %s after dockerd's restart", st)
	}
	start = time.Now()
	requireNoLeaks(t, h, 30*time.Second)
	t.Logf("LEAKS() empty %v after the containers were up", time.Since(start).Round(time.Millisecond))

	// The container without a restart policy starts again cleanly.
	out := h.MustDocker(t, "start", "fkonce")
	waitRunningOn(t, h, "fkonce", "fk1", "10.78.60.", ip2, 30*time.Second)
	noEndpointExists(t, h, out)
	requireNoLeaks(t, h, 10*time.Second)
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var pid int
	_, err = fmt.Sscan(strings.TrimSpace(string(b)), &pid)
	return pid, err
}

// (f) dockerd is killed with -9 under --live-restore, on a host whose
// containerd is its own process (testbed.NewHostOwnContainerd: dockerd's
// own containerd dies with dockerd, and a restarted dockerd could not reach
// the old shims). Containers must keep running and keep talking while
// dockerd is down (a ping between two of them across the kill and the
// restart: no loss), the restarted dockerd takes them back (same pids), the
// plugin's records match docker's (LEAKS()), and restart, removal and new
// containers work afterwards.
func TestFaultDockerdKill9LiveRestore(t *testing.T) {
	requirePlugin(t)
	h := testbed.NewHostOwnContainerd(t, testbed.HostOptions{Name: "fl", Debug: true, DockerdArgs: []string{"--live-restore"}})
	h.ImportImage(t)
	h.StartPlugin(t, pluginBin)
	createNetwork(t, h, "fl1", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.78.61.0/24")
	runContainer(t, h, "fla", "fl1")
	runContainer(t, h, "flb", "fl1", "--ip", "10.78.61.50", "--restart", "always")
	waitPing(t, h, "fla", "10.78.61.50")
	requireNoLeaks(t, h, 10*time.Second)
	pids := map[string]int{"fla": containerPid(t, h, "fla"), "flb": containerPid(t, h, "flb")}

	// 150 pings, 0.2 s apart (30 s), from fla to flb, across the outage.
	const pings = 150
	h.MustDocker(t, "exec", "-d", "fla", "sh", "-c", fmt.Sprintf("ping -i 0.2 -c %d -W 1 10.78.61.50 > /tmp/ping.out 2>&1", pings))
	time.Sleep(2 * time.Second) // pings before the kill, so loss at the kill would show
	if err := h.Dockerd().Kill9(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if c := h.Containerd(); c.Exited() {
		t.Fatalf("the host's containerd died with dockerd: %v", c.ExitErr())
	}
	for n, pid := range pids {
		if !pidAlive(pid) {
			t.Errorf("%s (pid %d) died with dockerd under --live-restore", n, pid)
		}
	}
	const down = 10 * time.Second // the outage: containers run with no dockerd
	time.Sleep(down)
	start := time.Now()
	h.StartDockerdOnContainerd(t)
	t.Logf("dockerd ready %v after its restart (down %v)", time.Since(start).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	for n, pid := range pids {
		if got := containerPid(t, h, n); got != pid {
			t.Errorf("%s has pid %d after the restart, want %d: not live-restored", n, got, pid)
		}
	}
	// The ping run ends by itself; read its summary.
	var summary string
	testbed.WaitFor(t, 60*time.Second, func() error {
		out, err := h.Docker("exec", "fla", "cat", "/tmp/ping.out")
		if err != nil || !strings.Contains(out, "packet loss") {
			return errorf("ping not done: %v %s", err, out)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "packet loss") {
				summary = strings.TrimSpace(l)
			}
		}
		return nil
	})
	t.Logf("fla -> flb across dockerd's kill -9 and restart: %s", summary)
	if !strings.HasPrefix(summary, fmt.Sprintf("%d packets transmitted, %d packets received", pings, pings)) {
		t.Errorf("traffic between containers lost packets while dockerd was down: %s", summary)
	}
	start = time.Now()
	requireNoLeaks(t, h, 30*time.Second)
	t.Logf("LEAKS() empty %v after dockerd was ready", time.Since(start).Round(time.Millisecond))

	// Life goes on: restart (new endpoint, same --ip), removal, a new one.
	out := h.MustDocker(t, "restart", "-t", "1", "flb")
	waitRunningOn(t, h, "flb", "fl1", "10.78.61.50", "10.78.61.1", 30*time.Second)
	waitPing(t, h, "fla", "10.78.61.50")
	removeContainers(t, h, "fla")
	runContainer(t, h, "flc", "fl1")
	waitPing(t, h, "flc", "10.78.61.50")
	noEndpointExists(t, h, out)
	requireNoLeaks(t, h, 10*time.Second)
}
