package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/status"
)

// TestManagedPlugin installs vxbridge the way `make plugin` does (a plugin
// directory built without docker build, `docker plugin create`) on a test
// dockerd, and checks that networks, containers and state survive what
// operators do to a managed plugin: a refused rm, a dockerd restart,
// disable/enable, and an upgrade to a second tag.
func TestManagedPlugin(t *testing.T) {
	requirePlugin(t)
	v1 := buildPluginDir(t, "e2e-v1")
	v2 := buildPluginDir(t, "e2e-v2") // other content: docker refuses two plugins with the same layers
	h := testbed.NewHost(t, testbed.HostOptions{Name: "mp"})
	h.ImportImage(t)
	state := filepath.Join(h.Dir(), "plugin-state") // the state mount's source, outside any rootfs
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}

	const p1, p2 = "vxbridge:v1", "vxbridge:v2"
	installPlugin(t, h, p1, v1, state)
	h.MustDocker(t, "plugin", "enable", p1)
	createNetwork(t, h, "mnet", "-d", p1, "--ipam-driver", p1, "--ipv6", "--subnet", "10.82.0.0/24", "--subnet", "fd82::/64")
	runContainer(t, h, "ma", "mnet", "--restart", "always")
	runContainer(t, h, "mb", "mnet", "--restart", "always")
	waitPing(t, h, "ma", "mb")
	waitPing(t, h, "ma", containerIP(t, h, "mb", "mnet", true)) // IPv6 needs the sysctls: /proc/sys is writable
	netID := strings.TrimSpace(h.MustDocker(t, "network", "inspect", "-f", "{{.Id}}", "mnet"))
	rep := managedStatus(t, h, "e2e-v1", netID, 2)
	wantGauge(t, scrape(t, h), "vxbridge_networks", nil, 1) // VXBRIDGE_METRICS_LISTEN reached the plugin

	t.Run("RmRefused", func(t *testing.T) {
		for _, args := range [][]string{{"plugin", "rm", p1}, {"plugin", "disable", p1}} {
			out, err := h.Docker(args...)
			if err == nil || !strings.Contains(out, "in use") {
				t.Errorf("docker %s: %v %q, want refused as in use", strings.Join(args, " "), err, out)
			}
		}
		mustPing(t, h, "ma", "mb")
		managedStatus(t, h, "e2e-v1", netID, 2)
	})

	t.Run("DockerdRestart", func(t *testing.T) {
		h.StopDockerd(t)
		h.StartDockerd(t)
		// Docker starts the plugin before it serves its API, then restarts
		// the containers on the plugin's network.
		waitRunning(t, h, "ma", "mb")
		waitPing(t, h, "ma", "mb")
		managedStatus(t, h, "e2e-v1", netID, 2)
	})

	t.Run("DisableEnable", func(t *testing.T) {
		h.MustDocker(t, "plugin", "disable", "-f", p1)
		mustPing(t, h, "ma", "mb") // the kernel keeps the bridge and veths without the plugin
		h.MustDocker(t, "plugin", "enable", p1)
		runContainer(t, h, "mc", "mnet")
		waitPing(t, h, "mc", "ma")
		managedStatus(t, h, "e2e-v1", netID, 3)
		removeContainers(t, h, "mc")
	})

	t.Run("Upgrade", func(t *testing.T) {
		before := managedStatus(t, h, "e2e-v1", netID, 2)
		installPlugin(t, h, p2, v2, state)
		h.MustDocker(t, "plugin", "disable", "-f", p1)
		h.MustDocker(t, "plugin", "enable", p2)
		after := managedStatus(t, h, "e2e-v2", netID, 2)
		for i := range before.Endpoints {
			if before.Endpoints[i].ID != after.Endpoints[i].ID || before.Endpoints[i].IPv4 != after.Endpoints[i].IPv4 {
				t.Errorf("endpoint %d changed across the upgrade: %+v -> %+v", i, before.Endpoints[i], after.Endpoints[i])
			}
		}
		mustPing(t, h, "ma", "mb")
		// The new tag serves new networks, its IPAM knowing the old pools.
		out, err := h.Docker("network", "create", "-d", p2, "--ipam-driver", p2, "--subnet", "10.82.0.0/25", "overlap")
		if err == nil || !strings.Contains(out, "10.82.0.0/24") {
			h.Docker("network", "rm", "overlap")
			t.Errorf("v2 accepted a pool overlapping v1's network: %v %q", err, out)
		}
		createNetwork(t, h, "mnet2", "-d", p2, "--ipam-driver", p2, "--subnet", "10.83.0.0/24")
		h.MustDocker(t, "run", "--rm", "--network", "mnet2", testbed.Image, "ping", "-c1", "-W2", "10.83.0.1")
		h.MustDocker(t, "network", "rm", "mnet2")
		// Back to v1, which owns mnet in docker's eyes, for the cleanup.
		h.MustDocker(t, "plugin", "disable", "-f", p2)
		h.MustDocker(t, "plugin", "enable", p1)
		managedStatus(t, h, "e2e-v1", netID, 2)
		mustPing(t, h, "ma", "mb")
	})

	// Docker binds a network to its driver's full name, so an upgrade that
	// new containers on old networks can use keeps the name: rm -f and
	// create again (no registry needed, unlike docker plugin upgrade).
	t.Run("UpgradeInPlace", func(t *testing.T) {
		h.MustDocker(t, "plugin", "rm", p2) // disabled and unused: docker frees its content for p1
		h.MustDocker(t, "plugin", "disable", "-f", p1)
		h.MustDocker(t, "plugin", "rm", "-f", p1)
		installPlugin(t, h, p1, v2, state)
		h.MustDocker(t, "plugin", "enable", p1)
		managedStatus(t, h, "e2e-v2", netID, 2)
		mustPing(t, h, "ma", "mb")
		runContainer(t, h, "md", "mnet")
		waitPing(t, h, "md", "ma")
		removeContainers(t, h, "md")
	})
	_ = rep
}

// buildPluginDir builds a static vxbridge reporting version and the plugin
// directory around it with hack/build-plugin.sh, as `make plugin-dir` does.
func buildPluginDir(t *testing.T, version string) string {
	t.Helper()
	goBin, err := testbed.GoTool()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "vxbridge")
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags", "-X main.version="+version, "-o", bin, ".")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := filepath.Join(tmp, "plugin")
	if out, err := exec.Command("../hack/build-plugin.sh", bin, "../config.json", dir).CombinedOutput(); err != nil {
		t.Fatalf("hack/build-plugin.sh: %v\n%s", err, out)
	}
	return dir
}

// installPlugin creates the managed plugin name from dir and sets what
// operators set with `docker plugin set`: the state directory (here inside
// the test host's directory, never the machine's /var/lib/vxbridge), the
// log level and the metrics address.
func installPlugin(t *testing.T, h *testbed.Host, name, dir, state string) {
	t.Helper()
	h.MustDocker(t, "plugin", "create", name, dir)
	h.MustDocker(t, "plugin", "set", name, "state.source="+state,
		"VXBRIDGE_LOG_LEVEL=debug", "VXBRIDGE_METRICS_LISTEN="+metricsAddr)
}

// managedStatus runs `vxbridge status --json` on h (the socket found under
// /run/docker/plugins/<id>/) and checks the running version, the network and
// its endpoint count, and that all is healthy.
func managedStatus(t *testing.T, h *testbed.Host, version, netID string, endpoints int) *status.Report {
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
	if rep.Version != version || len(rep.Networks) != 1 || rep.Networks[0].ID != netID || len(rep.Endpoints) != endpoints {
		t.Fatalf("status: want %s with network %s and %d endpoints, got %+v", version, netID, endpoints, rep)
	}
	if p := rep.Problems(); len(p) > 0 {
		t.Errorf("status problems: %q", p)
	}
	if want := dockerBackend(t, h); rep.Firewall.Backend != want {
		t.Errorf("plugin uses iptables backend %q (%s); docker's chains are in %q", rep.Firewall.Backend, rep.Firewall.Reason, want)
	}
	return rep
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
