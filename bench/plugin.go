package bench

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// plugin is bin/vxbridge serving in a throwaway namespace, no dockerd.
type plugin struct {
	ns     *testbed.NetNS
	bin    string
	dir    string
	socket string
	proc   *testbed.Process
}

// newPlugin makes a namespace and a state directory for a plugin; both go
// (the namespace with every process still in it) when the test ends.
func newPlugin(t testing.TB, bin string) *plugin {
	t.Helper()
	bin = pluginBinary(t, bin)
	dir, err := os.MkdirTemp("", "vxbench-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return &plugin{ns: testbed.NewNetNS(t), bin: bin, dir: dir, socket: filepath.Join(dir, "vxbridge.sock")}
}

// pluginBinary is bin made absolute, failing the test when it is missing.
func pluginBinary(t testing.TB, bin string) string {
	t.Helper()
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("plugin binary: %v (run `make build` first)", err)
	}
	return abs
}

// start runs the plugin and returns the time from starting it until
// Plugin.Activate answers 200: the plugin reconciles its whole store before
// it listens, so this is restart-to-ready.
func (p *plugin) start(t testing.TB) time.Duration {
	t.Helper()
	if p.proc != nil && !p.proc.Exited() {
		t.Fatalf("plugin pid %d still running", p.proc.Pid())
	}
	os.Remove(p.socket)
	begin := time.Now()
	p.proc = p.ns.Start(t, filepath.Join(p.dir, "plugin.log"), p.bin, "serve",
		"--socket", p.socket, "--state-dir", filepath.Join(p.dir, "state"), "--log-level", "warn")
	for {
		if p.proc.Exited() {
			t.Fatalf("plugin exited: %v\n%s", p.proc.ExitErr(), p.proc.Log())
		}
		if code, _, err := testbed.PluginCall(p.socket, "/Plugin.Activate", ""); err == nil && code == 200 {
			return time.Since(begin)
		}
		if time.Since(begin) > 30*time.Second {
			t.Fatalf("plugin not ready after 30s\n%s", p.proc.Log())
		}
		time.Sleep(time.Millisecond)
	}
}

// stop sends SIGTERM and waits.
func (p *plugin) stop(t testing.TB) {
	t.Helper()
	if err := p.proc.Stop(); err != nil {
		t.Fatal(err)
	}
}

// rssKiB is the plugin's VmRSS.
func (p *plugin) rssKiB(t testing.TB) int {
	t.Helper()
	kib, err := vmRSS(p.proc.Pid())
	if err != nil {
		t.Fatal(err)
	}
	return kib
}

func vmRSS(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// cpuTime is the plugin's user+system CPU time so far.
func (p *plugin) cpuTime(t testing.TB) time.Duration {
	t.Helper()
	d, err := procCPU(p.proc.Pid())
	if err != nil {
		t.Fatal(err)
	}
	return d
}
