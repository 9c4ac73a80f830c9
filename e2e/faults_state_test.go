package e2e

import (
	"encoding/binary"
	"errors"
	"maps"
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

// The state file moved away while the plugin is stopped (a changed
// --state-dir, a reinstall pointing elsewhere): the plugin's start on the
// new, empty file is refused (exit code 5) with one line saying what it
// found and the commands that recover, and touches nothing: the containers
// keep pinging, links and rules stay as they were. doctor says the same
// without the plugin. Each way out then brings the records back, and docker
// can run another container on the network and delete everything cleanly.
func TestFaultStateFileMovedAway(t *testing.T) {
	for _, way := range []string{"adopt", "restore"} {
		t.Run(way, func(t *testing.T) { stateMovedAway(t, way) })
	}
}

func stateMovedAway(t *testing.T, way string) {
	h := faultHost(t, "sm"+way[:1])
	createNetwork(t, h, "sm1", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.78.11.0/24")
	runContainer(t, h, "sma", "sm1")
	runContainer(t, h, "smb", "sm1")
	ipA, ipB := containerIP(t, h, "sma", "sm1", false), containerIP(t, h, "smb", "sm1", false)
	waitPing(t, h, "sma", ipB)
	// A clean start writes the good copy, with the network and both endpoints.
	if err := h.Plugin().Stop(); err != nil {
		t.Fatal(err)
	}
	h.StartPlugin(t, pluginBin)
	if err := h.Plugin().Stop(); err != nil {
		t.Fatal(err)
	}
	dir := h.PluginStateDir()
	path := filepath.Join(dir, store.FileName)
	if err := os.Rename(path, path+".moved"); err != nil {
		t.Fatal(err)
	}
	linksBefore, rulesBefore := linkState(t, h), testbed.IPTablesSave(t, h)

	log := refusedStart(t, h, "plugin-moved.log")
	for _, want := range []string{"state file " + path + " is new", "vxbridge objects of this state and 4 of others",
		"nothing was touched", "vxbridge state restore --state-dir " + dir, "--adopt", "--purge-foreign"} {
		if !strings.Contains(log, want) {
			t.Errorf("the refusal does not say %q", want)
		}
	}
	if got := linkIdentities(linkState(t, h)); !maps.Equal(got, linkIdentities(linksBefore)) {
		t.Errorf("links changed by the refused start:\n before %v\n after  %v", linkIdentities(linksBefore), got)
	}
	if got := testbed.IPTablesSave(t, h); got != rulesBefore {
		t.Errorf("rules changed by the refused start:\n%s", lineDiff(rulesBefore, got))
	}
	mustPing(t, h, "sma", ipB)
	out := runCLI(t, h, false, "doctor", "--socket", h.PluginSocket(), "--state-dir", dir, "--netns-dir", h.PluginNetNSDir())
	t.Logf("doctor without the plugin:\n%s", out)
	if !strings.Contains(out, "ownership") || !strings.Contains(out, "a start on this state file is refused") || !strings.Contains(out, "--adopt") {
		t.Errorf("doctor does not say why the plugin cannot start")
	}

	recoverState(t, h, way, dir)
	mustPing(t, h, "sma", ipB)
	rep := statusJSON(t, h, h.PluginSocket())
	if len(rep.Networks) != 1 || len(rep.Endpoints) != 2 || len(rep.Problems()) != 0 {
		t.Errorf("after %s: %d networks, %d endpoints, problems %q", way, len(rep.Networks), len(rep.Endpoints), rep.Problems())
	}
	runContainer(t, h, "smc", "sm1") // the IPAM knows the pool and the addresses taken
	if ipC := containerIP(t, h, "smc", "sm1", false); ipC == ipA || ipC == ipB {
		t.Errorf("a new container got %s, which sma (%s) or smb (%s) holds", ipC, ipA, ipB)
	} else {
		waitPing(t, h, "smc", ipA)
	}
	removeContainers(t, h, "sma", "smb", "smc")
	h.MustDocker(t, "network", "rm", "sm1")
	requireNoLeaks(t, h, 30*time.Second)
}

// refusedStart starts the plugin on h's state and expects start-up to be
// refused (exit code 5) within 15 s; it returns the log.
func refusedStart(t *testing.T, h *testbed.Host, logName string) string {
	t.Helper()
	start := time.Now()
	p := h.Start(t, logName, pluginBin, "serve", "--socket", h.PluginSocket(), "--state-dir", h.PluginStateDir(), "--netns-dir", h.PluginNetNSDir())
	select {
	case <-p.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("plugin still running after 15 s:\n%s", p.Log())
	}
	log := p.Log()
	t.Logf("refused after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(log))
	var exit *exec.ExitError
	if !errors.As(p.ExitErr(), &exit) || exit.ExitCode() != 5 {
		t.Errorf("exit %v, want exit code 5", p.ExitErr())
	}
	return log
}

// recoverState takes one way out of a refused start, and starts the plugin
// as it then normally runs.
func recoverState(t *testing.T, h *testbed.Host, way, dir string) {
	t.Helper()
	switch way {
	case "adopt":
		start := time.Now()
		p := h.StartPlugin(t, pluginBin, "--adopt")
		t.Logf("start with --adopt serving after %v", time.Since(start).Round(time.Millisecond))
		for _, want := range []string{"network adopted", "endpoint adopted", "decision=adopt"} {
			if !strings.Contains(p.Log(), want) {
				t.Errorf("the log of the adopting start does not say %q", want)
			}
		}
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
	case "restore":
		t.Logf("restore: %s", strings.TrimSpace(mustRun(t, pluginBin, "state", "restore", "--state-dir", dir)))
	}
	p := h.StartPlugin(t, pluginBin)
	if strings.Contains(p.Log(), "removed orphan") {
		t.Errorf("the start after %s removed links:\n%s", way, p.Log())
	}
}

// A bit flipped in the state file's root page: the plugin refuses to start
// (exit code 3) naming the damage and the command that recovers, with no
// trace, the containers keep pinging, and `vxbridge state restore` brings
// back the good copy the previous start wrote.
func TestFaultBitFlippedState(t *testing.T) {
	h := faultHost(t, "fb")
	createNetwork(t, h, "fb1", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.78.12.0/24")
	runContainer(t, h, "fba", "fb1")
	runContainer(t, h, "fbb", "fb1")
	ipB := containerIP(t, h, "fbb", "fb1", false)
	waitPing(t, h, "fba", ipB)
	for range 2 { // the second start writes the good copy with both endpoints
		if err := h.Plugin().Stop(); err != nil {
			t.Fatal(err)
		}
		h.StartPlugin(t, pluginBin)
	}
	if err := h.Plugin().Stop(); err != nil {
		t.Fatal(err)
	}
	dir := h.PluginStateDir()
	path := filepath.Join(dir, store.FileName)
	flipRootPageBits(t, path)

	start := time.Now()
	p := h.Start(t, "plugin-flipped.log", pluginBin, "serve", "--socket", h.PluginSocket(), "--state-dir", dir, "--netns-dir", h.PluginNetNSDir())
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
	for _, want := range []string{path, "state file is damaged", "vxbridge state restore --state-dir " + dir} {
		if !strings.Contains(log, want) {
			t.Errorf("the error does not say %q", want)
		}
	}
	for _, trace := range []string{"panic:", "fatal error", "goroutine "} {
		if strings.Contains(log, trace) {
			t.Errorf("the log holds a trace (%q)", trace)
		}
	}
	mustPing(t, h, "fba", ipB)
	t.Logf("restore: %s", strings.TrimSpace(mustRun(t, pluginBin, "state", "restore", "--state-dir", dir)))
	p = h.StartPlugin(t, pluginBin)
	if strings.Contains(p.Log(), "removed orphan") {
		t.Errorf("the start on the restored file removed links:\n%s", p.Log())
	}
	mustPing(t, h, "fba", ipB)
	runContainer(t, h, "fbc", "fb1")
	waitPing(t, h, "fbc", ipB)
	removeContainers(t, h, "fba", "fbb", "fbc")
	h.MustDocker(t, "network", "rm", "fb1")
	requireNoLeaks(t, h, 30*time.Second)
}

// flipRootPageBits flips bits in the page id of the root page the newer
// meta page names: a page every read goes through.
func flipRootPageBits(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A meta page: the page header (16 bytes), then magic, version, page
	// size, flags (4 each), the root bucket (root page id, sequence), the
	// freelist and high-water page ids, the transaction id (8 each).
	const metaAt = 16
	le := binary.LittleEndian
	ps := int(le.Uint32(data[metaAt+8:]))
	meta := data[metaAt:]
	if other := data[ps+metaAt:]; le.Uint64(other[48:]) > le.Uint64(meta[48:]) {
		meta = other
	}
	root := int(le.Uint64(meta[16:]))
	if root < 2 || (root+1)*ps > len(data) {
		t.Fatalf("root page %d of a %d-byte file with %d-byte pages", root, len(data), ps)
	}
	data[root*ps+1] ^= 0x5a
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("flipped bits 0x5a in the id of root page %d (page size %d)", root, ps)
}

// linkIdentities keeps what a start could change of each link of
// linkState: its index, MTU, master and alias (a bridge's timers in `ip -d`
// move on their own).
func linkIdentities(links map[string]string) map[string]string {
	out := make(map[string]string, len(links))
	for name, line := range links {
		index, _, _ := strings.Cut(line, ":")
		f := strings.Fields(line)
		id := []string{index}
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "master" || f[i] == "alias" || f[i] == "mtu" {
				id = append(id, f[i]+" "+f[i+1])
			}
		}
		out[name] = strings.Join(id, " ")
	}
	return out
}
