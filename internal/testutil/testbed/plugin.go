package testbed

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// PluginName is the plugin's socket basename, hence its driver name.
const PluginName = "vxbridge"

// PluginSocket is where the host's plugin listens (D/plugins/vxbridge.sock,
// seen by the host's dockerd as /run/docker/plugins/vxbridge.sock).
func (h *Host) PluginSocket() string {
	return filepath.Join(h.PluginsDir(), PluginName+".sock")
}

// PluginStateDir is the plugin's --state-dir (D/state); it survives plugin
// restarts within the host's life.
func (h *Host) PluginStateDir() string { return filepath.Join(h.dir, "state") }

// PluginNetNSDir is the plugin's --netns-dir (D/netns): the namespaces of
// its cross-host networks, bind mounts in the machine's mount namespace
// (removed with D at teardown).
func (h *Host) PluginNetNSDir() string { return filepath.Join(h.dir, "netns") }

// PluginNamespaces lists the names of the plugin's network namespaces (the
// files under PluginNetNSDir, mounted or not); none before the first.
func (h *Host) PluginNamespaces() ([]string, error) {
	ents, err := os.ReadDir(h.PluginNetNSDir())
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

// StartPlugin runs `BIN serve --socket D/plugins/vxbridge.sock --state-dir
// D/state --netns-dir D/netns ARGS...` in the host's network namespace and
// the machine's mount namespace, as a plugin run by systemd would (its
// bind mounts of network namespaces must outlive it, and it needs none of
// the private mounts dockerd gets), output appended to D/plugin.log, and
// waits until the socket answers POST /Plugin.Activate with 200. Call it
// again after Kill9 or Stop to restart the plugin. The host owns the process
// (it outlives the subtest that started it) and stops it at teardown.
func (h *Host) StartPlugin(t testing.TB, bin string, args ...string) *Process {
	t.Helper()
	h.mu.Lock()
	prev := h.plugin
	h.mu.Unlock()
	if prev != nil && !prev.Exited() {
		t.Fatalf("%s: plugin (pid %d) is still running", h.Name, prev.Pid())
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	argv := append([]string{bin, "serve", "--socket", h.PluginSocket(), "--state-dir", h.PluginStateDir(),
		"--netns-dir", h.PluginNetNSDir()}, args...)
	start := time.Now()
	p := h.startOwned(t, "plugin.log", argv, false)
	h.mu.Lock()
	h.plugin = p
	h.mu.Unlock()
	err = Poll(30*time.Second, func() error {
		if p.Exited() {
			return Permanent(fmt.Errorf("plugin exited: %v", p.ExitErr()))
		}
		return activate(h.PluginSocket())
	})
	if err != nil {
		t.Fatalf("%s: plugin not ready after %v: %v\n--- plugin.log ---\n%s",
			h.Name, time.Since(start).Round(time.Millisecond), err, tail(p.Log(), 40))
	}
	if err := p.checkExe(bin); err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	t.Logf("%s: plugin pid %d ready in %v", h.Name, p.Pid(), time.Since(start).Round(time.Millisecond))
	return p
}

// Plugin is the latest plugin started on the host, or nil.
func (h *Host) Plugin() *Process {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.plugin
}

// activate sends what dockerd sends first: POST /Plugin.Activate, empty body.
func activate(socket string) error {
	code, body, err := PluginCall(socket, "/Plugin.Activate", "")
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("POST /Plugin.Activate: HTTP %d: %s", code, body)
	}
	return nil
}

// PluginCall POSTs body (JSON) to path on a plugin's unix socket, as dockerd
// does, and returns the status code and body.
func PluginCall(socket, path, body string) (int, string, error) {
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			DisableKeepAlives: true,
		},
	}
	req, err := http.NewRequest(http.MethodPost, "http://plugin"+path, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Accept", "application/vnd.docker.plugins.v1.2+json")
	req.Header.Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}
