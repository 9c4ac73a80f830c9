package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/namespace"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/vxlan"
)

// The managed plugin's cross-host network: on both hosts of the test.
const (
	mxNet    = "mx"
	mxVNI    = 84
	mxSubnet = "10.84.0.0/24"
)

// TestManagedPlugin installs vxbridge the way `make plugin` does (a plugin
// directory built without docker build, `docker plugin create`) on two
// test dockerds joined by an underlay with etcd, and checks that networks,
// containers and state survive what operators do to a managed plugin: a
// refused rm, a dockerd restart, disable/enable, and an upgrade to a second
// tag and in place. Host mp has a single-host network and, with host mq, a
// cross-host one, whose own network namespace (bridge and VXLAN device) is
// bind-mounted in the host's mount namespace: it must be the same
// namespace after each of them, with the containers on both hosts still
// pinging each other, and nothing left behind at the end. Each plugin
// publishes its containers' names to the other host, though docker mounts
// the sandboxes in a mount namespace the plugin does not run in.
func TestManagedPlugin(t *testing.T) {
	requirePlugin(t)
	testbed.EnsureCommands(t, map[string]string{"etcd": "etcd-server"})
	v1 := buildPluginDir(t, "e2e-v1")
	v2 := buildPluginDir(t, "e2e-v2") // other content: docker refuses two plugins with the same layers
	m := &multiHost{t: t, ul: testbed.NewUnderlay(t), vteps: map[*testbed.Host]string{}}
	m.etcdURL = "http://" + m.ul.IP + ":2379"
	m.etcdDir = t.TempDir()
	m.startEtcd(t)
	h := newManagedHost(t, m, "mp")
	peer := newManagedHost(t, m, "mq")

	const p1, p2 = "vxbridge:v1", "vxbridge:v2"
	for _, mh := range []*testbed.Host{h, peer} {
		installPlugin(t, mh, p1, v1, m.etcdURL)
		mh.MustDocker(t, "plugin", "enable", p1)
		createNetwork(t, mh, mxNet, "-d", p1, "--ipam-driver", p1, "--subnet", mxSubnet, "-o", fmt.Sprintf("vxlan.id=%d", mxVNI))
	}
	createNetwork(t, h, "mnet", "-d", p1, "--ipam-driver", p1, "--ipv6", "--subnet", "10.82.0.0/24", "--subnet", "fd82::/64")
	runContainer(t, h, "ma", "mnet", "--restart", "always")
	runContainer(t, h, "mb", "mnet", "--restart", "always")
	runContainer(t, h, "xa", mxNet, "--restart", "always")
	runContainer(t, peer, "xb", mxNet)
	waitPing(t, h, "ma", "mb")
	waitPing(t, h, "ma", containerIP(t, h, "mb", "mnet", true)) // IPv6 needs the sysctls: /proc/sys is writable
	waitPing(t, peer, "xb", containerIP(t, h, "xa", mxNet, false))
	mnetID := strings.TrimSpace(h.MustDocker(t, "network", "inspect", "-f", "{{.Id}}", "mnet"))
	mxID := strings.TrimSpace(h.MustDocker(t, "network", "inspect", "-f", "{{.Id}}", mxNet))
	want := map[string]int{mnetID: 2, mxID: 1}
	rep := managedStatus(t, h, "e2e-v1", want)
	ns := crossHostNS(t, h, rep, mxID)
	wantGauge(t, scrape(t, h), "vxbridge_networks", nil, 2) // VXBRIDGE_METRICS_LISTEN reached the plugin
	checkPtraceDropped(t, h)
	// Each managed plugin learned its container's name (in the sandbox
	// docker mounted in its own mount namespace) and published it.
	waitNamePublished(t, peer, "xa."+mxNet, containerIP(t, h, "xa", mxNet, false))
	waitNamePublished(t, h, "xb."+mxNet, containerIP(t, peer, "xb", mxNet, false))

	t.Run("RmRefused", func(t *testing.T) {
		for _, args := range [][]string{{"plugin", "rm", p1}, {"plugin", "disable", p1}} {
			out, err := h.Docker(args...)
			if err == nil || !strings.Contains(out, "in use") {
				t.Errorf("docker %s: %v %q, want refused as in use", strings.Join(args, " "), err, out)
			}
		}
		mustPing(t, h, "ma", "mb")
		managedStatus(t, h, "e2e-v1", want)
	})

	t.Run("DockerdRestart", func(t *testing.T) {
		h.StopDockerd(t)
		h.StartDockerd(t)
		// Docker starts the plugin before it serves its API, then restarts
		// the containers on the plugin's network.
		waitRunning(t, h, "ma", "mb", "xa")
		waitPing(t, h, "ma", "mb")
		waitPing(t, peer, "xb", containerIP(t, h, "xa", mxNet, false))
		ns.requireSame(t, managedStatus(t, h, "e2e-v1", want))
	})

	t.Run("DisableEnable", func(t *testing.T) {
		// The kernel keeps bridges, veths and the cross-host network's
		// namespace without the plugin: not one ping is lost.
		pings := startPings(peer, "xb", containerIP(t, h, "xa", mxNet, false), 100*time.Millisecond, 8*time.Second)
		h.MustDocker(t, "plugin", "disable", "-f", p1)
		mustPing(t, h, "ma", "mb")
		h.MustDocker(t, "plugin", "enable", p1)
		pings.requireNoLoss(t)
		runContainer(t, h, "mc", "mnet")
		runContainer(t, h, "xc", mxNet)
		waitPing(t, h, "mc", "ma")
		waitPing(t, peer, "xb", containerIP(t, h, "xc", mxNet, false))
		waitNamePublished(t, peer, "xc."+mxNet, containerIP(t, h, "xc", mxNet, false)) // by the plugin enabled again
		ns.requireSame(t, managedStatus(t, h, "e2e-v1", map[string]int{mnetID: 3, mxID: 2}))
		removeContainers(t, h, "mc", "xc")
	})

	t.Run("Upgrade", func(t *testing.T) {
		before := managedStatus(t, h, "e2e-v1", want)
		installPlugin(t, h, p2, v2, m.etcdURL)
		h.MustDocker(t, "plugin", "disable", "-f", p1)
		h.MustDocker(t, "plugin", "enable", p2)
		after := managedStatus(t, h, "e2e-v2", want)
		for i := range before.Endpoints {
			if before.Endpoints[i].ID != after.Endpoints[i].ID || before.Endpoints[i].IPv4 != after.Endpoints[i].IPv4 {
				t.Errorf("endpoint %d changed across the upgrade: %+v -> %+v", i, before.Endpoints[i], after.Endpoints[i])
			}
		}
		ns.requireSame(t, after)
		mustPing(t, h, "ma", "mb")
		mustPing(t, peer, "xb", containerIP(t, h, "xa", mxNet, false))
		// The new tag serves new networks, its IPAM knowing the old pools.
		out, err := h.Docker("network", "create", "-d", p2, "--ipam-driver", p2, "--subnet", "10.82.0.0/25", "overlap")
		if err == nil || !strings.Contains(out, "10.82.0.0/24") {
			h.Docker("network", "rm", "overlap")
			t.Errorf("v2 accepted a pool overlapping v1's network: %v %q", err, out)
		}
		createNetwork(t, h, "mnet2", "-d", p2, "--ipam-driver", p2, "--subnet", "10.83.0.0/24")
		h.MustDocker(t, "run", "--rm", "--network", "mnet2", testbed.Image, "ping", "-c1", "-W2", "10.83.0.1")
		h.MustDocker(t, "network", "rm", "mnet2")
		// Back to v1, which owns mnet and mx in docker's eyes, for the cleanup.
		h.MustDocker(t, "plugin", "disable", "-f", p2)
		h.MustDocker(t, "plugin", "enable", p1)
		managedStatus(t, h, "e2e-v1", want)
		mustPing(t, h, "ma", "mb")
	})

	// Docker binds a network to its driver's full name, so an upgrade that
	// new containers on old networks can use keeps the name: rm -f and
	// create again (no registry needed, unlike docker plugin upgrade).
	t.Run("UpgradeInPlace", func(t *testing.T) {
		h.MustDocker(t, "plugin", "rm", p2) // disabled and unused: docker frees its content for p1
		h.MustDocker(t, "plugin", "disable", "-f", p1)
		h.MustDocker(t, "plugin", "rm", "-f", p1)
		installPlugin(t, h, p1, v2, m.etcdURL)
		h.MustDocker(t, "plugin", "enable", p1)
		ns.requireSame(t, managedStatus(t, h, "e2e-v2", want))
		mustPing(t, h, "ma", "mb")
		mustPing(t, peer, "xb", containerIP(t, h, "xa", mxNet, false))
		runContainer(t, h, "md", "mnet")
		waitPing(t, h, "md", "ma")
		removeContainers(t, h, "md")
	})

	t.Run("Leaks", func(t *testing.T) {
		hosts := []*testbed.Host{h, peer}
		for _, mh := range hosts {
			requireNoLeaksAt(t, mh, managedPlugin(t, mh, p1), 20*time.Second)
		}
		requireNoCrossHostLeaksAt(t, hosts, func(mh *testbed.Host) pluginPlace { return managedPlugin(t, mh, p1) }, 20*time.Second)
		// Teardown: the namespace goes with the network, from the host's
		// mount namespace, where the plugin made it.
		removeContainers(t, h, "ma", "mb", "xa")
		removeContainers(t, peer, "xb")
		for _, mh := range hosts {
			mh.MustDocker(t, "network", "rm", mxNet)
		}
		h.MustDocker(t, "network", "rm", "mnet")
		for _, mh := range hosts {
			requireNoLeaksAt(t, mh, managedPlugin(t, mh, p1), 20*time.Second)
			if names, err := mh.PluginNamespaces(); err != nil || len(names) > 0 {
				t.Errorf("%s: namespaces left in %s: %q, %v", mh.Name, mh.PluginNetNSDir(), names, err)
			}
		}
	})
}

// newManagedHost is a test host on m's underlay with the test image.
func newManagedHost(t *testing.T, m *multiHost, name string) *testbed.Host {
	t.Helper()
	h := testbed.NewHost(t, testbed.HostOptions{Name: name})
	m.vteps[h] = m.ul.Attach(t, h)
	h.ImportImage(t)
	m.hosts = append(m.hosts, h)
	return h
}

// buildPluginDir builds a static vxbridge reporting version and the plugin
// directory around it, as `make plugin-dir` does.
func buildPluginDir(t *testing.T, version string) string {
	t.Helper()
	goBin, err := testbed.GoTool()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "vxbridge")
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags", "-X main.version="+version, "-o", bin, ".")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return testbed.PluginDir(t, "..", bin)
}

// installPlugin creates the managed plugin name from dir on h and sets what
// operators set with `docker plugin set` (testbed's InstallPlugin: state
// and namespaces in h's directory): the log level, the metrics address and
// the cluster.
func installPlugin(t *testing.T, h *testbed.Host, name, dir, etcdURL string) {
	t.Helper()
	h.InstallPlugin(t, name, dir, "VXBRIDGE_LOG_LEVEL=debug", "VXBRIDGE_METRICS_LISTEN="+metricsAddr,
		"VXBRIDGE_ETCD_ENDPOINTS="+etcdURL, "VXBRIDGE_VTEP_INTERFACE="+testbed.UnderlayHostLink)
}

// managedPlugin is where LEAKS() reaches h's managed plugin, serving as
// driver name.
func managedPlugin(t *testing.T, h *testbed.Host, name string) pluginPlace {
	t.Helper()
	socks := pluginSockets(h)
	if len(socks) != 1 {
		t.Fatalf("%s: %d managed plugin sockets (%q), want 1", h.Name, len(socks), socks)
	}
	return pluginPlace{socket: socks[0], stateDir: h.PluginStateDir(), driver: name}
}

// managedStatus runs `vxbridge status --json` on h (the socket found under
// /run/docker/plugins/<id>/) and checks the running version, the networks
// and their endpoint counts (want: by network id), and that all is healthy.
func managedStatus(t *testing.T, h *testbed.Host, version string, want map[string]int) *status.Report {
	t.Helper()
	var rep *status.Report
	// Right after enable, docker may still be starting the plugin.
	testbed.WaitFor(t, 20*time.Second, func() error {
		if len(pluginSockets(h)) == 0 {
			return os.ErrNotExist
		}
		return nil
	})
	rep = statusJSON(t, h, "")
	got := map[string]int{}
	for _, n := range rep.Networks {
		got[n.ID] = n.Endpoints
	}
	if rep.Version != version || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("status: want %s with endpoints by network %v, got %v in %+v", version, want, got, rep)
	}
	if p := rep.Problems(); len(p) > 0 {
		t.Errorf("status problems: %q", p)
	}
	if want := dockerBackend(t, h); rep.Firewall.Backend != want {
		t.Errorf("plugin uses iptables backend %q (%s); docker's chains are in %q", rep.Firewall.Backend, rep.Firewall.Reason, want)
	}
	return rep
}

// netnsAt is a cross-host network's own namespace: its name and the inode
// of the namespace mounted on its file, which changes if it is ever made
// again.
type netnsAt struct {
	h     *testbed.Host
	netID string
	name  string
	inode uint64
}

// crossHostNS finds network netID's namespace in rep and checks that it is
// mounted in this process's mount namespace (the host's, for the plugin)
// and holds the network's bridge and VXLAN device.
func crossHostNS(t *testing.T, h *testbed.Host, rep *status.Report, netID string) *netnsAt {
	t.Helper()
	ns := &netnsAt{h: h, netID: netID}
	var bridge string
	for _, n := range rep.Networks {
		if n.ID == netID {
			ns.name, bridge = n.NetNS, n.Bridge
		}
	}
	if ns.name == "" {
		t.Fatalf("%s: network %s has no namespace of its own: %+v", h.Name, netID, rep.Networks)
	}
	ns.inode = ns.mountedInode(t)
	for _, dev := range []string{bridge, vxlan.DeviceName(mxVNI)} {
		if out, err := execIn(h, ns.name, "ip", "-o", "link", "show", "dev", dev); err != nil {
			t.Fatalf("%s: %s is not in namespace %s: %v %s", h.Name, dev, ns.name, err, out)
		}
	}
	return ns
}

func (ns *netnsAt) mountedInode(t *testing.T) uint64 {
	t.Helper()
	path := filepath.Join(ns.h.PluginNetNSDir(), ns.name)
	if ok, err := namespace.IsNamespace(path); !ok || err != nil {
		t.Fatalf("%s: no namespace mounted on %s in the host's mount namespace (%v)", ns.h.Name, path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// requireSame checks that the plugin (rep) still has the network in the
// same namespace, never made again.
func (ns *netnsAt) requireSame(t *testing.T, rep *status.Report) {
	t.Helper()
	if again := crossHostNS(t, ns.h, rep, ns.netID); again.name != ns.name || again.inode != ns.inode {
		t.Errorf("%s: network %s's namespace is %s (inode %d), was %s (inode %d): it did not survive",
			ns.h.Name, ns.netID, again.name, again.inode, ns.name, ns.inode)
	}
}

// checkPtraceDropped checks that no thread of h's plugin has
// CAP_SYS_PTRACE left: it is config.json's for opening the host's mount
// namespace at start only.
func checkPtraceDropped(t *testing.T, h *testbed.Host) {
	t.Helper()
	const ptrace = 19 // CAP_SYS_PTRACE
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", managedPluginPid(t, h)))
	if len(tasks) == 0 {
		t.Fatalf("%s: no threads of the plugin found", h.Name)
	}
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			continue // the thread ended
		}
		for _, line := range strings.Split(string(b), "\n") {
			key, hex, _ := strings.Cut(line, ":")
			var set uint64
			if !strings.HasPrefix(key, "Cap") || key == "CapAmb" {
				continue
			}
			if _, err := fmt.Sscanf(strings.TrimSpace(hex), "%x", &set); err == nil && set&(1<<ptrace) != 0 {
				t.Errorf("%s: plugin thread %s still has CAP_SYS_PTRACE in %s (%s)", h.Name, task, key, strings.TrimSpace(hex))
			}
		}
	}
}

// managedPluginPid is the pid of the managed plugin running on h: the
// process in h's network namespace running /vxbridge serve.
func managedPluginPid(t *testing.T, h *testbed.Host) int {
	t.Helper()
	want, err := os.Stat(h.NetNS().Path())
	if err != nil {
		t.Fatal(err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmd, err := os.ReadFile(p)
		if err != nil || !strings.HasPrefix(string(cmd), "/vxbridge\x00serve\x00") {
			continue
		}
		dir := filepath.Dir(p)
		if fi, err := os.Stat(filepath.Join(dir, "ns", "net")); err == nil && os.SameFile(fi, want) {
			var pid int
			fmt.Sscanf(filepath.Base(dir), "%d", &pid)
			return pid
		}
	}
	t.Fatalf("%s: no managed plugin process in the host's network namespace", h.Name)
	return 0
}

// waitNamePublished waits until the managed plugin on h answers name
// ("<container>.<network>" of another host's container) with addr: the
// other host's plugin learned the name and published it.
func waitNamePublished(t *testing.T, h *testbed.Host, name, addr string) {
	t.Helper()
	start := time.Now()
	testbed.WaitFor(t, 20*time.Second, func() error {
		var names []status.Name
		if rep := statusJSON(t, h, ""); rep.Cluster != nil {
			names = rep.Cluster.Names
		}
		for _, n := range names {
			if n.Name == name && slices.Contains(n.Addresses, addr) {
				return nil
			}
		}
		return fmt.Errorf("%s: status lists no %s at %s: %+v", h.Name, name, addr, names)
	})
	t.Logf("%s: %s at %s published, seen after %v", h.Name, name, addr, time.Since(start).Round(time.Millisecond))
}

// waitRunning waits until docker reports the containers running.
func waitRunning(t *testing.T, h *testbed.Host, names ...string) {
	t.Helper()
	testbed.WaitFor(t, 60*time.Second, func() error {
		for _, n := range names {
			out, err := h.Docker("inspect", "-f", "{{.State.Running}}", n)
			if err != nil || strings.TrimSpace(out) != "true" {
				return &notRunning{n, strings.TrimSpace(out)}
			}
		}
		return nil
	})
}

type notRunning struct{ name, state string }

func (e *notRunning) Error() string { return e.name + " is not running: " + e.state }
