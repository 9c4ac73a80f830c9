package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// TestHarnessSmoke checks the testbed on docker's own drivers, without
// vxbridge: a dockerd in its namespace, the imported image, container to
// container over a docker bridge network, NAT to the internet namespace,
// and that teardown leaves nothing behind.
func TestHarnessSmoke(t *testing.T) {
	requireE2E(t)
	begin := time.Now()
	var footprint *testbed.Footprint
	t.Run("host", func(t *testing.T) {
		start := time.Now()
		h := testbed.NewHost(t, testbed.HostOptions{Name: "smoke"})
		footprint = h.Footprint()
		t.Logf("timing: NewHost (namespace + dockerd ready) %v", time.Since(start).Round(time.Millisecond))

		start = time.Now()
		h.ImportImage(t)
		t.Logf("timing: ImportImage %v", time.Since(start).Round(time.Millisecond))

		if out := h.MustDocker(t, "run", "--rm", testbed.Image, "echo", "hi"); strings.TrimSpace(out) != "hi" {
			t.Fatalf("docker run echo hi printed %q", out)
		}

		createNetwork(t, h, "smokebr", "--subnet", "10.99.1.0/24")
		runContainer(t, h, "sm1", "smokebr")
		ip := containerIP(t, h, "sm1", "smokebr", false)
		h.MustDocker(t, "run", "--rm", "--network", "smokebr", testbed.Image, "ping", "-c1", "-W2", ip)
		h.MustDocker(t, "run", "--rm", "--network", "smokebr", testbed.Image, "ping", "-c1", "-W2", "sm1")

		in := testbed.NewInternet(t, h)
		h.MustDocker(t, "run", "--rm", testbed.Image, "ping", "-c1", "-W2", in.ServerIPv4)
		// No route back: only the host's masquerading makes the reply arrive.
		if out := in.Exec(t, "ip", "route", "show"); strings.Contains(out, "10.99.") || strings.Contains(out, "172.17.") {
			t.Errorf("internet namespace routes to container subnets:\n%s", out)
		}
	})
	checkGone(t, footprint)
	t.Logf("timing: smoke test total %v", time.Since(begin).Round(time.Millisecond))
}

// TestHarnessPluginProcess checks plugin handling with the test binary as a
// fake plugin: readiness, the pid being the plugin's, discovery by dockerd
// through the host's plugins folder, kill -9 and restart, and teardown after
// the test killed dockerd under running containers.
func TestHarnessPluginProcess(t *testing.T) {
	requireE2E(t)
	t.Setenv(fakePluginEnv, "1")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var footprint *testbed.Footprint
	t.Run("host", func(t *testing.T) {
		h := testbed.NewHost(t, testbed.HostOptions{Name: "fake"})
		footprint = h.Footprint()
		h.ImportImage(t)

		p := h.StartPlugin(t, self) // checks /proc/PID/exe is the binary
		h.MustDocker(t, "network", "create", "-d", testbed.PluginName, "--subnet", "10.99.2.0/24", "fakenet")
		h.MustDocker(t, "network", "rm", "fakenet")
		if !strings.Contains(p.Log(), "/NetworkDriver.CreateNetwork") {
			t.Errorf("dockerd did not reach the plugin through its plugins folder; plugin log:\n%s", p.Log())
		}

		if err := p.Kill9(); err != nil {
			t.Fatal(err)
		}
		if !p.Exited() {
			t.Fatal("plugin still running after Kill9")
		}
		p2 := h.StartPlugin(t, self)
		if p2.Pid() == p.Pid() {
			t.Errorf("restarted plugin has the old pid %d", p.Pid())
		}
		if err := p2.Stop(); err != nil {
			t.Errorf("stop plugin: %v", err)
		}
		h.StartPlugin(t, self) // left running: the host's teardown stops it

		// A container running when dockerd dies leaves containerd, a shim and
		// the container process behind: teardown must find them.
		h.MustDocker(t, "run", "-d", "--name", "orphan", testbed.Image, "sleep", "300")
		if err := h.Dockerd().Kill9(); err != nil {
			t.Fatal(err)
		}
	})
	checkGone(t, footprint)

	// A plugin the test killed and left dead: teardown must not wait out
	// docker's 30 s plugin retries for every container.
	start := time.Now()
	t.Run("dead plugin", func(t *testing.T) {
		h := testbed.NewHost(t, testbed.HostOptions{Name: "deadplug"})
		footprint = h.Footprint()
		h.ImportImage(t)
		p := h.StartPlugin(t, self)
		h.MustDocker(t, "network", "create", "-d", testbed.PluginName, "--subnet", "10.99.3.0/24", "fakenet")
		h.MustDocker(t, "run", "-d", "--name", "running", testbed.Image, "sleep", "300")
		if err := p.Kill9(); err != nil {
			t.Fatal(err)
		}
	})
	checkGone(t, footprint)
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("host with a dead plugin took %v to set up and tear down", d)
	}
}

// TestHarnessTwoHosts checks two hosts side by side on an underlay: they
// reach each other and the underlay namespace, and each dockerd sees only
// its own host's plugin.
func TestHarnessTwoHosts(t *testing.T) {
	requireE2E(t)
	t.Setenv(fakePluginEnv, "1")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ul := testbed.NewUnderlay(t)
	var footprints []*testbed.Footprint
	t.Run("hosts", func(t *testing.T) {
		h1 := testbed.NewHost(t, testbed.HostOptions{Name: "h1"})
		h2 := testbed.NewHost(t, testbed.HostOptions{Name: "h2"})
		footprints = append(footprints, h1.Footprint(), h2.Footprint())
		ip1, ip2 := ul.Attach(t, h1), ul.Attach(t, h2)
		h1.Exec(t, "busybox", "ping", "-c1", "-W2", ip2)
		h2.Exec(t, "busybox", "ping", "-c1", "-W2", ip1)
		h2.Exec(t, "busybox", "ping", "-c1", "-W2", ul.IP)

		h1.StartPlugin(t, self)
		h1.MustDocker(t, "network", "create", "-d", testbed.PluginName, "--subnet", "10.99.4.0/24", "fakenet")
		h1.MustDocker(t, "network", "rm", "fakenet")
		// Asking h2's dockerd for the driver would take docker's ~15 s lookup
		// retries to fail: look at the folder it searches instead.
		for _, h := range []*testbed.Host{h1, h2} {
			mnt := fmt.Sprintf("--mount=/proc/%d/ns/mnt", h.Dockerd().Pid())
			out, err := exec.Command("nsenter", mnt, "ls", "-A", "/run/docker/plugins").CombinedOutput()
			if err != nil {
				t.Fatalf("list %s's /run/docker/plugins: %v\n%s", h.Name, err, out)
			}
			want := ""
			if h == h1 {
				want = testbed.PluginName + ".sock"
			}
			if got := strings.TrimSpace(string(out)); got != want {
				t.Errorf("%s's dockerd sees /run/docker/plugins = %q, want %q", h.Name, got, want)
			}
		}
	})
	for _, f := range footprints {
		checkGone(t, f)
	}
}

// checkGone fails when a host's namespaces, processes, directories or
// cgroups outlived its teardown.
func checkGone(t *testing.T, f *testbed.Footprint) {
	t.Helper()
	if f == nil {
		return
	}
	if left := f.Leftovers(); len(left) > 0 {
		t.Errorf("left behind:\n  %s", strings.Join(left, "\n  "))
	}
	out, err := testbedNetnsList()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range f.NetNS {
		if strings.Contains(out, n.Name) {
			t.Errorf("`ip netns list` still shows %s", n.Name)
		}
	}
}

func testbedNetnsList() (string, error) {
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	return string(out), err
}
