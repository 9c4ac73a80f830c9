package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/status"
)

// Fault scenarios (issue 7), each on a testbed host of its own; results are
// tabled in RELIABILITY.md. `make faults` runs only these.

// faultHost is a fresh host with the test image and a running plugin.
func faultHost(t *testing.T, name string) *testbed.Host {
	t.Helper()
	requirePlugin(t)
	h := testbed.NewHost(t, testbed.HostOptions{Name: name, Debug: true})
	h.ImportImage(t)
	h.StartPlugin(t, pluginBin)
	return h
}

// pluginServes checks the plugin on h's socket answers Activate and Status.
func pluginServes(h *testbed.Host) error {
	if code, body, err := testbed.PluginCall(h.PluginSocket(), "/Plugin.Activate", ""); err != nil || code != http.StatusOK {
		return errorf("Activate: HTTP %d %v %s", code, err, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := status.Fetch(ctx, h.PluginSocket())
	return err
}

// (a) A second plugin on the same socket, with the same state directory or
// another one, exits at once (exit code 4) naming the first's pid, before it
// touches any state; the first keeps its socket and keeps serving docker.
func TestFaultSecondInstance(t *testing.T) {
	h := faultHost(t, "fa")
	first := h.Plugin()
	for name, stateDir := range map[string]string{"SameStateDir": h.PluginStateDir(), "OtherStateDir": filepath.Join(h.Dir(), "state2")} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			second := h.Start(t, "plugin2-"+name+".log", pluginBin, "serve", "--socket", h.PluginSocket(), "--state-dir", stateDir)
			select {
			case <-second.Done():
			case <-time.After(15 * time.Second):
				t.Fatalf("second instance (pid %d) still running after 15 s; log:\n%s", second.Pid(), second.Log())
			}
			took := time.Since(start)
			t.Logf("second instance exited after %v: %v", took.Round(time.Millisecond), second.ExitErr())
			var exit *exec.ExitError
			if !errors.As(second.ExitErr(), &exit) || exit.ExitCode() != 4 {
				t.Errorf("second instance exited with %v, want exit code 4", second.ExitErr())
			}
			if took > 5*time.Second {
				t.Errorf("second instance took %v to give up, want a fast failure", took)
			}
			log := second.Log()
			for _, want := range []string{"another vxbridge is running", fmt.Sprintf("pid %d", first.Pid()), h.PluginSocket()} {
				if !strings.Contains(log, want) {
					t.Errorf("second instance's error does not say %q:\n%s", want, log)
				}
			}
			if _, err := os.Stat(filepath.Join(h.Dir(), "state2")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the second instance made its state dir: %v", err)
			}
		})
	}
	if first.Exited() {
		t.Fatalf("first plugin died: %v", first.ExitErr())
	}
	if err := pluginServes(h); err != nil {
		t.Fatalf("first plugin no longer serves on its socket: %v", err)
	}
	createNetwork(t, h, "fa1", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.78.1.0/24")
	runContainer(t, h, "fa1c", "fa1")
	containerIP(t, h, "fa1c", "fa1", false)
	requireNoLeaks(t, h, 10*time.Second)
}

// (c) Docker forgets an endpoint while the plugin is down: kill -9 the
// plugin, `docker rm -f` a container (docker's Leave, DeleteEndpoint and
// ReleaseAddress calls fail and docker moves on), start the plugin again:
// LEAKS() must be empty within a bounded time, the survivor untouched.
func TestFaultEndpointForgottenWhilePluginDown(t *testing.T) {
	h := faultHost(t, "fc")
	createNetwork(t, h, "fc1", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.78.3.0/24")
	runContainer(t, h, "fcgone", "fc1")
	runContainer(t, h, "fckept", "fc1")
	goneIP := containerIP(t, h, "fcgone", "fc1", false)
	keptIP := containerIP(t, h, "fckept", "fc1", false)
	requireNoLeaks(t, h, 10*time.Second)

	if err := h.Plugin().Kill9(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	removeContainers(t, h, "fcgone")
	t.Logf("docker rm -f with the plugin down took %v", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	h.StartPlugin(t, pluginBin)
	requireNoLeaks(t, h, 30*time.Second)
	t.Logf("LEAKS() empty %v after the plugin started", time.Since(start).Round(time.Millisecond))
	waitPing(t, h, "fckept", "10.78.3.1")

	// The forgotten address is free again (no duplicate, no exhaustion):
	// asking for it by name succeeds.
	runContainer(t, h, "fcnew", "fc1", "--ip", goneIP)
	if ip := containerIP(t, h, "fcnew", "fc1", false); ip != goneIP || ip == keptIP {
		t.Errorf("new container got %s, want the released %s", ip, goneIP)
	}
	waitPing(t, h, "fcnew", keptIP)
	requireNoLeaks(t, h, 10*time.Second)
}

// (d) The plugin is absent while dockerd starts containers that have a
// restart policy; once it starts, they come up connected.
func TestFaultPluginAbsentAtDockerStart(t *testing.T) {
	h := faultHost(t, "fd")
	createNetwork(t, h, "fd1", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.78.4.0/24")
	for _, n := range []string{"fdr1", "fdr2"} {
		runContainer(t, h, n, "fd1", "--restart", "always")
	}
	if err := h.Plugin().Kill9(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	h.StopDockerd(t)
	t.Logf("dockerd stop with the plugin down took %v", time.Since(start).Round(time.Millisecond))
	// Docker blocks its start-up on the plugin its restart-policy
	// containers need (moby/libnetwork #813): it does not answer its API
	// until the plugin is there. So the plugin comes up while dockerd is
	// starting, as systemd would bring it, late.
	const pluginDelay = 5 * time.Second
	start = time.Now()
	var pluginUp time.Time
	started := make(chan struct{})
	go func() {
		defer close(started)
		time.Sleep(pluginDelay)
		pluginUp = time.Now()
		h.StartPlugin(t, pluginBin)
	}()
	h.StartDockerd(t)
	<-started
	t.Logf("dockerd ready %v after its start, %v after the plugin started %v late",
		time.Since(start).Round(time.Millisecond), time.Since(pluginUp).Round(time.Millisecond), pluginDelay)
	start = pluginUp
	for _, n := range []string{"fdr1", "fdr2"} {
		testbed.WaitFor(t, 90*time.Second, func() error {
			out, err := h.Docker("inspect", "-f", "{{.State.Running}} {{with index .NetworkSettings.Networks \"fd1\"}}{{.IPAddress}}{{end}}", n)
			if err != nil || !strings.HasPrefix(out, "true 10.78.4.") {
				return errorf("%s: %v %s", n, err, out)
			}
			return ping(h, n, "10.78.4.1")
		})
	}
	t.Logf("containers running and connected %v after the plugin started", time.Since(start).Round(time.Millisecond))
	requireNoLeaks(t, h, 30*time.Second)
}

// (b) The state file's filesystem turns read-only under the running plugin
// (ext4 errors=remount-ro, triggered through its sysfs test knob): network
// create fails with a clear error and leaves nothing behind, existing
// networks keep working, the plugin does not crash. Recovery: fsck and
// mount rw, restart the plugin, state intact. Also: a read-only state dir
// at start makes the plugin fail fast, and a remount rw lets it start.
func TestFaultReadOnlyState(t *testing.T) {
	requirePlugin(t)
	testbed.EnsureCommands(t, map[string]string{"mkfs.ext4": "e2fsprogs", "e2fsck": "e2fsprogs", "findmnt": "util-linux"})
	h := testbed.NewHost(t, testbed.HostOptions{Name: "fb", Debug: true})
	h.ImportImage(t)
	dir := h.PluginStateDir()
	img := filepath.Join(h.Dir(), "state.img")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "truncate", "-s", "32M", img)
	mustRun(t, "mkfs.ext4", "-q", "-O", "^has_journal", img)
	mustRun(t, "mount", "-o", "loop,errors=remount-ro", img, dir)
	t.Cleanup(func() { run("umount", "-l", dir) }) // runs before the host's teardown stops the plugin; its copy of the mount dies with it
	h.StartPlugin(t, pluginBin)

	createNetwork(t, h, "fbok", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.78.2.0/24")
	runContainer(t, h, "fbc", "fbok")
	iptBefore := testbed.IPTablesSave(t, h)
	linksBefore := linkState(t, h)

	dev := strings.TrimSpace(mustRun(t, "findmnt", "-n", "-o", "SOURCE", dir))
	if err := os.WriteFile("/sys/fs/ext4/"+filepath.Base(dev)+"/trigger_fs_error", []byte("vxbridge fault test\n"), 0o200); err != nil {
		t.Fatalf("trigger ext4 error on %s: %v", dev, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "probe"), nil, 0o600); err == nil {
		t.Fatalf("%s still writable after the ext4 error", dir)
	}

	for _, c := range []struct{ name, why string }{
		{"fbipam", "vxbridge IPAM: RequestPool cannot store the pool"},
		{"fbdrv", "default IPAM: the driver cannot store the network after building its bridge"},
	} {
		args := []string{"network", "create", "-d", testbed.PluginName, "--subnet", "10.78.20.0/24"}
		if c.name == "fbipam" {
			args = append(args, "--ipam-driver", testbed.PluginName)
		}
		out, err := h.Docker(append(args, c.name)...)
		if err == nil {
			h.Docker("network", "rm", c.name)
			t.Errorf("%s (%s): network create succeeded on a read-only state dir", c.name, c.why)
			continue
		}
		t.Logf("%s: refused: %s", c.name, strings.TrimSpace(out))
		if !strings.Contains(out, "read-only file system") {
			t.Errorf("%s (%s): error does not say the state is on a read-only file system:\n%s", c.name, c.why, out)
		}
	}
	if p := h.Plugin(); p.Exited() {
		t.Fatalf("plugin died on a read-only state dir: %v\n%s", p.ExitErr(), p.Log())
	}
	if after := testbed.IPTablesSave(t, h); after != iptBefore {
		t.Errorf("failed creates left iptables changes:\n%s", lineDiff(iptBefore, after))
	}
	for name, line := range linkState(t, h) {
		if _, ok := linksBefore[name]; !ok {
			t.Errorf("failed create left a link: %s", line)
		}
	}
	if err := pluginServes(h); err != nil {
		t.Errorf("plugin does not serve status with a read-only state dir: %v", err)
	}
	waitPing(t, h, "fbc", "10.78.2.1") // the existing network still works
	if found := leaks(t, h); len(found) > 0 {
		t.Errorf("LEAKS() with a read-only state dir:\n  %s", strings.Join(found, "\n  "))
	}

	// Recovery. ext4 refuses a rw remount after an error, so: stop the
	// plugin, unmount, fsck, mount rw again, restart.
	if err := h.Plugin().Kill9(); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "umount", dir)
	if out, err := run("e2fsck", "-fy", img); err != nil && !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("e2fsck: %v\n%s", err, out)
	}
	// Read-only at start: fails fast with a message naming the file.
	mustRun(t, "mount", "-o", "loop", img, dir) // a writable loop device, so it can be remounted rw
	mustRun(t, "mount", "-o", "remount,ro", dir)
	p := h.Start(t, "plugin-ro.log", pluginBin, "serve", "--socket", h.PluginSocket(), "--state-dir", dir)
	select {
	case <-p.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("plugin on a read-only state dir still running after 15 s:\n%s", p.Log())
	}
	if log := p.Log(); p.ExitErr() == nil || !strings.Contains(log, "read-only file system") || !strings.Contains(log, dir) {
		t.Errorf("plugin on a read-only state dir: exit %v, want a failure naming %s and the read-only file system:\n%s", p.ExitErr(), dir, log)
	}
	mustRun(t, "mount", "-o", "remount,rw", dir)
	h.StartPlugin(t, pluginBin)
	createNetwork(t, h, "fbafter", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.78.21.0/24")
	runContainer(t, h, "fbc2", "fbafter")
	waitPing(t, h, "fbc2", "10.78.21.1")
	waitPing(t, h, "fbc", "10.78.2.1")
	requireNoLeaks(t, h, 10*time.Second)
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// run runs a command in the machine's namespaces (mount, losetup, fsck on
// files the test made) and returns its combined output.
func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
