package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/store"
)

// A state file cut to half while the plugin is stopped: the plugin refuses
// to start (exit code 3) naming the file, the cause and the command that
// recovers, with no panic trace; the containers keep pinging meanwhile;
// `vxbridge state restore` puts back the good copy the previous start wrote,
// and the plugin starts on it with the network and its endpoints.
func TestFaultDamagedState(t *testing.T) {
	h := faultHost(t, "fs")
	createNetwork(t, h, "fs1", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.78.9.0/24")
	runContainer(t, h, "fsa", "fs1")
	runContainer(t, h, "fsb", "fs1")
	ipB := containerIP(t, h, "fsb", "fs1", false)
	waitPing(t, h, "fsa", ipB)
	dir := h.PluginStateDir()
	path := filepath.Join(dir, store.FileName)

	// A start on a state with records writes its good copy.
	if err := h.Plugin().Stop(); err != nil {
		t.Fatal(err)
	}
	h.StartPlugin(t, pluginBin)
	if _, err := os.Stat(path + store.GoodSuffix); err != nil {
		t.Fatalf("no good copy after a clean start: %v", err)
	}
	if err := h.Plugin().Stop(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()/2); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	p := h.Start(t, "plugin-damaged.log", pluginBin, "serve", "--socket", h.PluginSocket(), "--state-dir", dir, "--netns-dir", h.PluginNetNSDir())
	select {
	case <-p.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("plugin on a damaged state file still running after 15 s:\n%s", p.Log())
	}
	log := p.Log()
	t.Logf("refused after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(log))
	var exit *exec.ExitError
	if !errors.As(p.ExitErr(), &exit) || exit.ExitCode() != 3 {
		t.Errorf("exit %v, want exit code 3", p.ExitErr())
	}
	for _, want := range []string{path, "state file is damaged", "cut short", "vxbridge state restore --state-dir " + dir} {
		if !strings.Contains(log, want) {
			t.Errorf("the error does not say %q", want)
		}
	}
	for _, trace := range []string{"panic:", "fatal error", "goroutine "} {
		if strings.Contains(log, trace) {
			t.Errorf("the log holds a trace (%q)", trace)
		}
	}
	mustPing(t, h, "fsa", ipB) // the kernel keeps the network without the plugin

	out := mustRun(t, pluginBin, "state", "restore", "--state-dir", dir)
	t.Logf("restore: %s", strings.TrimSpace(out))
	h.StartPlugin(t, pluginBin)
	mustPing(t, h, "fsa", ipB)
	runContainer(t, h, "fsc", "fs1") // the restored state knows the network and its pool
	waitPing(t, h, "fsc", ipB)
	requireNoLeaks(t, h, 30*time.Second)
}
