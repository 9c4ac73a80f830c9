package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// PluginDir builds the managed plugin's directory (config.json and rootfs)
// around bin, a static vxbridge binary, with root's hack/build-plugin.sh
// and config.json, as `make plugin-dir` does, and returns it.
func PluginDir(t testing.TB, root, bin string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "plugin")
	cmd := exec.Command(filepath.Join(root, "hack", "build-plugin.sh"), bin, filepath.Join(root, "config.json"), dir)
	if out, err := runTimeout(cmd, 2*time.Minute); err != nil {
		t.Fatalf("hack/build-plugin.sh: %v\n%s", err, out)
	}
	return dir
}

// InstallPlugin creates the managed plugin name on h from dir (PluginDir)
// and sets, with `docker plugin set`, its state directory to h's
// PluginStateDir, its networks' namespaces to h's PluginNetNSDir in the
// mount namespace of this test process, and settings (KEY=VALUE). A host's
// dockerd runs in a mount namespace of its own that dies with it (see the
// package's doc), so the namespaces' bind mounts go to the machine's, as
// they go to the host's init's on a real host. Docker removes the plugin
// with the host.
func (h *Host) InstallPlugin(t testing.TB, name, dir string, settings ...string) {
	t.Helper()
	h.MustDocker(t, "plugin", "create", name, dir)
	set := append([]string{"plugin", "set", name, "state.source=" + h.PluginStateDir(),
		"VXBRIDGE_NETNS_DIR=" + h.PluginNetNSDir(), fmt.Sprintf("VXBRIDGE_NETNS_MOUNT_NS=/proc/%d/ns/mnt", os.Getpid())},
		settings...)
	h.MustDocker(t, set...)
}
