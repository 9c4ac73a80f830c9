package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// The xtables lock held for 60 s by another program (`flock
// /run/xtables.lock sleep 60`, issue 13) under a plugin on iptables-legacy:
// docker calls that need iptables fail with an error naming the lock, each
// in bounded time (stuckCallLimit), `vxbridge status` answers meanwhile,
// running containers keep their network, and once the lock is free the same
// calls succeed without a plugin restart.
//
// The lock is this host's own file (XTABLES_LOCKFILE, which iptables-legacy
// reads, as the managed plugin's config.json sets it): holding the machine's
// /run/xtables.lock would stall every other iptables-legacy on it for a
// minute. dockerd was started before it is set, so only the plugin shares it.
func TestFaultXtablesLockHeld(t *testing.T) {
	requirePlugin(t)
	h := testbed.NewHost(t, testbed.HostOptions{Name: "xl", Debug: true})
	h.ImportImage(t)
	lockFile := filepath.Join(h.Dir(), "xtables.lock")
	t.Setenv("XTABLES_LOCKFILE", lockFile)
	h.StartPlugin(t, pluginBin, "--iptables-backend", "legacy")
	// docker's chains are in iptables-nft here, the plugin's in legacy: with
	// br_netfilter, docker's FORWARD DROP policy in nft would drop what the
	// plugin's legacy rules let through. An nft ACCEPT stands for its rules.
	h.Exec(t, "iptables-nft", "-I", "FORWARD", "-j", "ACCEPT")
	createNetwork(t, h, "xl1", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.78.21.0/24")
	runContainer(t, h, "xla", "xl1")
	runContainer(t, h, "xlb", "xl1")
	ipB := containerIP(t, h, "xlb", "xl1", false)
	waitPing(t, h, "xla", ipB)

	const hold = 60 * time.Second
	released := holdXtablesLock(t, lockFile, hold)
	var took []time.Duration
	for i := 0; time.Until(released) > 15*time.Second; i++ {
		start := time.Now()
		out, err := h.Docker("network", "create", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName,
			"--subnet", "10.78.22.0/24", "xl2")
		took = append(took, time.Since(start))
		if err == nil {
			t.Fatalf("network create %d succeeded %v into a held xtables lock", i+1, time.Since(released.Add(-hold)))
		}
		if !strings.Contains(out, "xtables lock") {
			t.Errorf("network create %d's error does not name the xtables lock: %s", i+1, out)
		}
		if limit := stuckCallLimit(i); took[i] > limit {
			t.Errorf("network create %d failed after %v, want within %v: %s", i+1, took[i].Round(time.Millisecond), limit, out)
		}
		if i == 0 {
			t.Logf("first refusal after %v: %s", took[0].Round(time.Millisecond), strings.TrimSpace(out))
		}
	}
	t.Logf("%d network creates refused while the lock was held, after %v", len(took), roundAll(took))
	t.Cleanup(func() { removeContainers(t, h, "xld") })
	start := time.Now()
	out, err := h.Docker("run", "-d", "--name", "xld", "--network", "xl1", "-p", "8092:80", testbed.Image, "sleep", "300")
	if d := time.Since(start); err == nil || !strings.Contains(out, "xtables lock") || d > stuckCallLimit(1) {
		t.Errorf("docker run -p into a held xtables lock: %v after %v, want an error naming the lock within %v: %s",
			err, d.Round(time.Millisecond), stuckCallLimit(1), out)
	}
	t.Logf("docker run -p refused after %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	statusJSON(t, h, h.PluginSocket())
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("vxbridge status took %v while the lock was held", d.Round(time.Millisecond))
	}
	t.Logf("vxbridge status answered in %v while the lock was held", time.Since(start).Round(time.Millisecond))
	mustPing(t, h, "xla", ipB)

	time.Sleep(time.Until(released))
	start = time.Now()
	createNetwork(t, h, "xl2", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.78.22.0/24")
	runContainer(t, h, "xlc", "xl2", "-p", "8091:80")
	t.Logf("after the lock was freed: network create and run -p took %v", time.Since(start).Round(time.Millisecond))
	mustPing(t, h, "xla", ipB)
	removeContainers(t, h, "xla", "xlb", "xlc")
	requireNoLeaks(t, h, 10*time.Second)
}

// stuckCallLimit bounds the i-th docker call into a held xtables lock: the
// first waits iptables' -w 10 for each address family that finds the lock
// held first (none if a reconcile pass found it so before), later ones the
// stalled -w 1 of each iptables run the call makes (2.3-4.1 s measured),
// each plus docker's and the machine's share; all within the 30 s docker
// gives a plugin's call, so docker passes vxbridge's error on.
func stuckCallLimit(i int) time.Duration {
	if i == 0 {
		return 25 * time.Second
	}
	return 8 * time.Second
}

// holdXtablesLock holds lockFile for hold, as `flock FILE sleep` does, and
// says when it will be free; the holder is killed by its pid at the end.
func holdXtablesLock(t *testing.T, lockFile string, hold time.Duration) time.Time {
	t.Helper()
	holder := exec.Command("flock", lockFile, "sleep", strconv.Itoa(int(hold/time.Second)))
	holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	released := time.Now().Add(hold)
	t.Cleanup(func() {
		_ = holder.Process.Kill()
		_ = holder.Wait()
		_ = os.Remove(lockFile)
	})
	testbed.WaitFor(t, 5*time.Second, func() error {
		if err := exec.Command("flock", "-n", lockFile, "true").Run(); err == nil {
			return errorf("%s not held yet", lockFile)
		}
		return nil
	})
	return released
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
