package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/store"
)

// (g) The state file's filesystem is full. A tmpfs would not do: writes
// into pages a file already has succeed there, and bbolt rewrites pages in
// place. So the state dir is a small loop ext4 (no reserved blocks: the
// plugin runs as root), filled to the last block by a filler file; bbolt
// then gets ENOSPC as soon as a transaction needs a page beyond the file's
// allocated blocks, which repeated creates force. Each refused network
// create and container run must name the state file and the cause, leave
// no link, no rule, no record and no address behind, and the plugin must
// not panic and must keep serving; containers can still be removed without
// leaving anything. Once the filler is removed everything works again.
func TestFaultFullState(t *testing.T) {
	requirePlugin(t)
	testbed.EnsureCommands(t, map[string]string{"mkfs.ext4": "e2fsprogs"})
	h := testbed.NewHost(t, testbed.HostOptions{Name: "fg", Debug: true})
	h.ImportImage(t)
	dir := h.PluginStateDir()
	img := filepath.Join(h.Dir(), "state.img")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "truncate", "-s", "16M", img)
	mustRun(t, "mkfs.ext4", "-q", "-m", "0", "-O", "^has_journal", img)
	mustRun(t, "mount", "-o", "loop", img, dir)
	t.Cleanup(func() { run("umount", "-l", dir) }) // before the host's teardown stops the plugin; its copy of the mount dies with it
	h.StartPlugin(t, pluginBin)
	stateFile := filepath.Join(dir, store.FileName)

	createNetwork(t, h, "fgok", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.78.70.0/24")
	createNetwork(t, h, "fgdef", "-d", testbed.PluginName, "--subnet", "10.78.71.0/24")
	runContainer(t, h, "fgc", "fgok")
	runContainer(t, h, "fgrm", "fgok")
	runContainer(t, h, "fgrm2", "fgdef")
	requireNoLeaks(t, h, 10*time.Second)

	filler := filepath.Join(dir, "filler")
	free := fill(t, filler)
	t.Logf("state filesystem filled: %d bytes free, state file %d bytes", free, fileSize(stateFile))

	// refused checks one refused command: the error, and nothing left.
	refused := func(what, out string, iptBefore string, linksBefore map[string]string) {
		t.Helper()
		t.Logf("%s refused: %s", what, strings.TrimSpace(out))
		for _, want := range []string{"no space left on device", stateFile} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: the error does not say %q:\n%s", what, want, out)
			}
		}
		if after := testbed.IPTablesSave(t, h); after != iptBefore {
			t.Errorf("%s: refused but left iptables changes:\n%s", what, lineDiff(iptBefore, after))
		}
		for name, line := range linkState(t, h) {
			if _, ok := linksBefore[name]; !ok {
				t.Errorf("%s: refused but left a link: %s", what, line)
			}
		}
		if p := h.Plugin(); p.Exited() {
			t.Fatalf("plugin died on a full state filesystem: %v", p.ExitErr())
		}
		if err := pluginServes(h); err != nil {
			t.Errorf("%s: plugin does not serve status on a full state filesystem: %v", what, err)
		}
	}

	// untilRefused repeats an operation that writes to the state file
	// until the plugin refuses it (bbolt reuses free pages of the file
	// first), and checks the refusal.
	const maxTries = 100
	untilRefused := func(what string, try func(i int) (string, string, error)) (string, int) {
		t.Helper()
		start := time.Now()
		for i := range maxTries {
			ipt, links := testbed.IPTablesSave(t, h), linkState(t, h)
			name, out, err := try(i)
			if err == nil {
				continue
			}
			t.Logf("%s %d refused after %d succeeded on the full filesystem (%v)", what, i+1, i, time.Since(start).Round(time.Millisecond))
			refused(what+" "+name, out, ipt, links)
			if found := leaks(t, h); len(found) > 0 {
				t.Errorf("LEAKS() after the refused %s:\n  %s", what, strings.Join(found, "\n  "))
			}
			return name, i
		}
		t.Fatalf("%d times %s on a full state filesystem all succeeded (state file %d bytes)", maxTries, what, fileSize(stateFile))
		return "", 0
	}
	netCreate := func(prefix string, ipam bool, third int) func(int) (string, string, error) {
		return func(i int) (string, string, error) {
			name := fmt.Sprintf("%s%d", prefix, i)
			args := []string{"network", "create", "-d", testbed.PluginName, "--subnet", fmt.Sprintf("10.%d.%d.0/24", third, i)}
			if ipam {
				args = append(args, "--ipam-driver", testbed.PluginName)
			}
			out, err := h.Docker(append(args, name)...)
			if err == nil {
				t.Cleanup(func() { h.Docker("network", "rm", name) })
			}
			return name, out, err
		}
	}
	dockerRun := func(prefix, network string) func(int) (string, string, error) {
		return func(i int) (string, string, error) {
			name := fmt.Sprintf("%s%d", prefix, i)
			t.Cleanup(func() { removeContainers(t, h, name) })
			out, err := h.Docker("run", "-d", "--name", name, "--network", network, testbed.Image, "sleep", "300")
			return name, out, err
		}
	}
	// vxbridge IPAM: RequestPool's save is the first write refused.
	netFail, _ := untilRefused("network create (vxbridge IPAM)", netCreate("fgn", true, 79))
	// docker's IPAM: the driver's own save, after it built the bridge and
	// its rules, is refused: both must be rolled back.
	drvFail, _ := untilRefused("network create (docker IPAM)", netCreate("fgd", false, 80))
	// A container on a vxbridge IPAM network: RequestAddress's save.
	runFail, _ := untilRefused("docker run (vxbridge IPAM)", dockerRun("fgr", "fgok"))
	// A container on a docker IPAM network: CreateEndpoint's save, after
	// the veth pair was made.
	runDefFail, _ := untilRefused("docker run (docker IPAM)", dockerRun("fgs", "fgdef"))
	waitPing(t, h, "fgc", "10.78.70.1") // what existed keeps working
	if log := h.Plugin().Log(); strings.Contains(log, "panic") {
		t.Errorf("plugin log mentions a panic:\n%s", log)
	}

	// Containers removed while the filesystem is full: docker ignores the
	// plugin's errors and would forget endpoints whose delete failed. The
	// deletes shrink the file's content, so bbolt finds the pages it needs
	// among those its earlier commits freed: they must all succeed.
	for _, n := range []string{"fgrm", "fgrm2"} {
		start := time.Now()
		out := h.MustDocker(t, "rm", "-f", n)
		t.Logf("docker rm -f %s on the full state filesystem took %v: %s", n, time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	}
	requireNoLeaks(t, h, 10*time.Second)

	// Space again: the refused operations now succeed, and nothing is lost.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	createNetwork(t, h, netFail, "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.79.250.0/24")
	createNetwork(t, h, drvFail, "-d", testbed.PluginName, "--subnet", "10.80.250.0/24")
	h.MustDocker(t, "start", runFail)
	waitRunningOn(t, h, runFail, "fgok", "10.78.70.", "10.78.70.1", 30*time.Second)
	h.MustDocker(t, "start", runDefFail)
	waitRunningOn(t, h, runDefFail, "fgdef", "10.78.71.", "10.78.71.1", 30*time.Second)
	runContainer(t, h, "fgafter", netFail)
	waitPing(t, h, "fgafter", "10.79.250.1")
	waitPing(t, h, "fgc", "10.78.70.1")
	requireNoLeaks(t, h, 10*time.Second)
	// A restart reads everything back.
	if err := h.Plugin().Kill9(); err != nil {
		t.Fatal(err)
	}
	h.StartPlugin(t, pluginBin)
	waitPing(t, h, "fgafter", "10.79.250.1")
	requireNoLeaks(t, h, 10*time.Second)
}

// fill writes path until the filesystem has no block left and returns the
// bytes statfs still reports free.
func fill(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, size := range []int{1 << 20, 4096, 512} {
		buf := make([]byte, size)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("fill %s: %v", path, err)
				}
				break
			}
		}
	}
	_ = f.Sync() // may itself say ENOSPC: the blocks are reserved already
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(path), &st); err != nil {
		t.Fatal(err)
	}
	return st.Bavail * uint64(st.Bsize)
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return st.Size()
}
