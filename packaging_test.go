package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/vxbridge/vxbridge/internal/server"
)

// pluginConfig is the part of config.json this test reads.
type pluginConfig struct {
	Description string
	Entrypoint  []string
	Interface   struct {
		Types  []string
		Socket string
	}
	Network struct{ Type string }
	Linux   struct {
		Capabilities    []string
		AllowAllDevices bool
		Devices         []json.RawMessage
	}
	PidHost, IpcHost bool
	Mounts           []struct {
		Name, Description, Source, Destination, Type string
		Options, Settable                            []string
	}
	Env []struct {
		Name, Value string
		Settable    []string
	}
}

func readPluginConfig(t *testing.T) pluginConfig {
	t.Helper()
	b, err := os.ReadFile("config.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var c pluginConfig
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("config.json: %v", err)
	}
	return c
}

// TestPluginConfig holds config.json to what docker and vxbridge need: both
// driver types on the socket serve listens on, host network, the state kept
// in a settable bind mount, and every settable env value a serve flag that
// accepts its default.
func TestPluginConfig(t *testing.T) {
	c := readPluginConfig(t)
	if strings.Join(c.Interface.Types, ",") != "docker.networkdriver/1.0,docker.ipamdriver/1.0" || c.Interface.Socket != "vxbridge.sock" {
		t.Errorf("interface = %+v", c.Interface)
	}
	if c.Network.Type != "host" {
		t.Errorf("network type %q, want host", c.Network.Type)
	}
	if len(c.Entrypoint) < 2 || c.Entrypoint[0] != "/vxbridge" || c.Entrypoint[1] != "serve" {
		t.Fatalf("entrypoint %q", c.Entrypoint)
	}
	cfg, err := parseServeFlags(c.Entrypoint[2:], func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatalf("entrypoint flags: %v", err)
	}
	if cfg.socket != "/run/docker/plugins/"+c.Interface.Socket || !cfg.writableProcSys {
		t.Errorf("entrypoint: socket %q (docker mounts the plugin's socket folder at /run/docker/plugins), writable /proc/sys %v", cfg.socket, cfg.writableProcSys)
	}
	var state bool
	for _, m := range c.Mounts {
		if m.Destination == cfg.stateDir {
			state = m.Type == "bind" && strings.Join(m.Settable, ",") == "source"
		}
	}
	if !state {
		t.Errorf("no settable bind mount at the state dir %s: %+v", cfg.stateDir, c.Mounts)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	names := map[string]bool{}
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	parseServeFlagsInto(t, fs)
	fs.VisitAll(func(f *flag.Flag) { names[server.EnvName("VXBRIDGE_", f.Name)] = true })
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, "VXBRIDGE_") {
			continue
		}
		if !names[e.Name] {
			t.Errorf("config.json sets %s, which no serve flag reads", e.Name)
		}
		if len(e.Settable) != 1 || e.Settable[0] != "value" {
			t.Errorf("%s is not settable", e.Name)
		}
	}
	// The values must be accepted, and be serve's own defaults but for the
	// mount namespace of the networks' namespaces: the package changes
	// nothing else an operator did not set.
	fromConfig, err := parseServeFlags(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatalf("config.json's env values: %v", err)
	}
	defaults, _ := parseServeFlags(nil, func(string) (string, bool) { return "", false }, io.Discard)
	defaults.netnsMountNS = hostMountNS
	if !reflect.DeepEqual(fromConfig, defaults) {
		t.Errorf("config.json's env values differ from serve's defaults:\n%+v\n%+v", fromConfig, defaults)
	}
	// Bind mounts made in the plugin's own mount namespace die with it: the
	// networks' namespaces must be mounted in the host's, whose init the
	// plugin sees only in the host's pid namespace.
	if fromConfig.netnsDir == "" || fromConfig.netnsMountNS != hostMountNS || !c.PidHost {
		t.Errorf("networks' namespaces in %q, mount namespace %q, pidHost %v: want them in the host's mount namespace, %s",
			fromConfig.netnsDir, fromConfig.netnsMountNS, c.PidHost, hostMountNS)
	}
	if env["XTABLES_LOCKFILE"] == "" {
		t.Error("XTABLES_LOCKFILE unset: the plugin's iptables-legacy would not share the host's lock")
	}
	checkLeastPrivilege(t, c, cfg.stateDir)
}

// pluginCapabilities are the capabilities the plugin needs; config.json's
// description says what each is for. (Docker gives plugins its default
// container capabilities too; CAP_SYS_CHROOT is one of them, listed because
// vxbridge relies on it.)
var pluginCapabilities = []string{"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE"}

// hostMountNS is the host's mount namespace as the plugin, in the host's
// pid namespace, reaches it.
const hostMountNS = "/proc/1/ns/mnt"

// checkLeastPrivilege holds the plugin to what it needs: exactly the
// capabilities above, each justified in the description; only the state
// directory mounted read-write; no device, no host ipc namespace; the host's
// pid namespace, said why.
func checkLeastPrivilege(t *testing.T, c pluginConfig, stateDir string) {
	t.Helper()
	got := slices.Sorted(slices.Values(c.Linux.Capabilities))
	if want := slices.Sorted(slices.Values(pluginCapabilities)); !slices.Equal(got, want) {
		t.Errorf("capabilities %v, want %v", got, want)
	}
	for _, cap := range c.Linux.Capabilities {
		if !strings.Contains(c.Description, cap+" (") {
			t.Errorf("the description does not say what %s is for: %q", cap, c.Description)
		}
	}
	for _, m := range c.Mounts {
		if m.Destination == stateDir {
			continue
		}
		if !slices.Contains(m.Options, "ro") || slices.Contains(m.Options, "rw") {
			t.Errorf("mount %s (%s at %s) options %v: every mount but the state directory must be read-only", m.Name, m.Source, m.Destination, m.Options)
		}
		if m.Description == "" {
			t.Errorf("mount %s does not say what it is for", m.Name)
		}
	}
	if c.Linux.AllowAllDevices || len(c.Linux.Devices) > 0 || c.IpcHost {
		t.Errorf("the plugin asks for devices or the host's ipc namespace: %+v", c.Linux)
	}
	if c.PidHost && !strings.Contains(c.Description, "Host pid namespace: ") {
		t.Errorf("the description does not say what the host's pid namespace is for: %q", c.Description)
	}
}

// parseServeFlagsInto collects serve's flag names by parsing --help into fs
// (parseServeFlags owns its FlagSet).
func parseServeFlagsInto(t *testing.T, fs *flag.FlagSet) {
	t.Helper()
	var help bytes.Buffer
	parseServeFlags([]string{"--help"}, func(string) (string, bool) { return "", false }, &help)
	for _, line := range strings.Split(help.String(), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "-") {
			name := strings.Fields(strings.TrimPrefix(line, "-"))[0]
			fs.String(name, "", "")
		}
	}
	if fs.Lookup("socket") == nil {
		t.Fatalf("could not read serve's flags from --help:\n%s", help.String())
	}
}

func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("dist/vxbridge.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"Before=docker.service", "ExecStart=/usr/local/bin/vxbridge serve", "Restart=always", "WantedBy=multi-user.target",
		"ExecStartPre=/bin/sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'"} { // before dockerd's one check of it
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	// Each gives the service a mount namespace of its own, where the bind
	// mounts keeping the networks' namespaces alive would die with it.
	for _, line := range strings.Split(unit, "\n") {
		key, _, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch key {
		case "PrivateTmp", "ProtectSystem", "ProtectHome", "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths",
			"PrivateDevices", "MountFlags", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths", "PrivateMounts":
			t.Errorf("unit sets %s: a mount namespace of its own would drop the network namespaces' bind mounts at every restart", key)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	// verify wants the ExecStart binary to exist: point it at this test binary.
	self, _ := os.Executable()
	dir := t.TempDir()
	unit = strings.ReplaceAll(unit, "/usr/local/bin/vxbridge", self)
	if err := os.WriteFile(filepath.Join(dir, "vxbridge.service"), []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", filepath.Join(dir, "vxbridge.service")).CombinedOutput()
	if err != nil || strings.Contains(string(out), "vxbridge.service") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestStatusDoctorUsage(t *testing.T) {
	for _, args := range [][]string{{"status", "extra"}, {"doctor", "--nope"}, {"status", "--socket"}} {
		if err := run(args, io.Discard, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	dir := t.TempDir()
	err := run([]string{"status", "--socket", filepath.Join(dir, "none.sock")}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "none.sock") {
		t.Errorf("status on a missing socket: %v", err)
	}
}
