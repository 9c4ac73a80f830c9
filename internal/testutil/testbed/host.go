package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// HostOptions tune a Host.
type HostOptions struct {
	// Name labels the host in logs ("h1"); default "host".
	Name string
	// DockerdArgs are extra dockerd flags, e.g. "--live-restore".
	DockerdArgs []string
	// Debug starts dockerd with --debug (it then logs every plugin call).
	Debug bool
	// StartTimeout bounds the wait for dockerd's API; default 60 s.
	StartTimeout time.Duration
	// FirewallBackend is dockerd's --firewall-backend: "" for the daemon's
	// default (iptables), or FirewallNFTables (the current daemon only).
	FirewallBackend string
}

// FirewallNFTables is docker's nftables firewall backend: docker writes
// its rules with the nft program into tables of its own and leaves
// forwarding to the host (it refuses to start with docker0 without it).
const FirewallNFTables = "nftables"

// Host is one simulated machine: a network namespace with its own dockerd,
// state directory and plugins folder.
type Host struct {
	Name string

	opts       HostOptions
	id         string
	dir        string
	ns         *NetNS
	footprint  *Footprint
	daemon     Daemon
	dockerBin  string
	dockerdBin string

	mu      sync.Mutex
	dockerd *Process
	plugin  *Process   // the latest plugin started
	procs   []*Process // host-owned processes, stopped before dockerd
	images  map[string]bool
}

// mountPreamble runs as `sh -c mountPreamble preamble DIR CMD ARGS...` in a
// new mount namespace entered into the host's network namespace. It gives
// CMD a sysfs of the network namespace (dockerd reads interfaces there), the
// cgroup hierarchy (hidden by that sysfs mount, so re-bound on top of it),
// and private /run/docker, /run/containerd and /etc/docker:
//   - /run/docker/plugins is this host's DIR/plugins only: a plugin socket is
//     seen by the dockerd of its host and no other;
//   - a tmpfs on /run/containerd hides a containerd the machine may run:
//     dockerd 20.10 would otherwise use it instead of starting its own, and
//     its shims would live outside our namespace;
//   - dockerd writes /etc/docker/key.json; DIR/etc-docker receives it.
//
// Mounts made here die with the last process of the mount namespace; the
// machine's mount table is never touched. mkdir -p of the mount points is
// the only trace outside DIR (empty folders docker would make anyway).
const mountPreamble = `set -e
d=$1; shift
mount --make-rprivate /
mount --rbind /sys/fs/cgroup "$d/cg"
mount -t sysfs sysfs /sys
mount --rbind "$d/cg" /sys/fs/cgroup
umount -l "$d/cg"
mkdir -p /run/docker /run/containerd /etc/docker
mount -t tmpfs -o mode=0711 tmpfs /run/docker
mkdir /run/docker/plugins
mount --bind "$d/plugins" /run/docker/plugins
mount -t tmpfs -o mode=0711 tmpfs /run/containerd
mount --bind "$d/etc-docker" /etc/docker
exec "$@"
`

// NewHost makes a namespace "vxt-xxxxxx" and a state directory
// /tmp/vxt-xxxxxx (D), and starts dockerd in the namespace with D/data,
// D/exec, D/docker.sock, D/dockerd.log. Containers go under the cgroup
// parent /vxt-xxxxxx. Everything is removed when the test ends, also when
// it fails or killed the daemons itself.
func NewHost(t testing.TB, opts HostOptions) *Host {
	t.Helper()
	RequireRoot(t)
	EnsurePackages(t)
	if opts.Name == "" {
		opts.Name = "host"
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	if opts.FirewallBackend == FirewallNFTables {
		EnsureCommands(t, map[string]string{"nft": "nftables"})
	}
	h := &Host{Name: opts.Name, opts: opts, images: map[string]bool{}, daemon: SelectedDaemon(t)}
	var err error
	if h.dockerBin, err = dockerClient(h.daemon); err != nil {
		t.Fatal(err)
	}
	if h.dockerdBin, err = daemonBin("dockerd"); err != nil {
		t.Fatal(err)
	}
	if h.id, h.dir, err = newStateDir(); err != nil {
		t.Fatalf("state dir: %v", err)
	}
	h.footprint = track(&Footprint{Dirs: []string{h.dir}, CgroupDir: NamePrefix + h.id})
	for _, sub := range []string{"plugins", "cg", "etc-docker", "state", "cli"} {
		if err := os.Mkdir(filepath.Join(h.dir, sub), 0o700); err != nil {
			os.RemoveAll(h.dir)
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(h.dir, "daemon.json"), []byte("{}\n"), 0o600); err != nil {
		os.RemoveAll(h.dir)
		t.Fatal(err)
	}
	if h.ns, err = newNetNS(h.id); err != nil {
		os.RemoveAll(h.dir)
		t.Fatal(err)
	}
	h.footprint.NetNS = []*NetNS{h.ns}
	t.Cleanup(func() { h.cleanup(t) })
	h.StartDockerd(t)
	h.logDaemon(t)
	return h
}

// Dir is the host's state directory D.
func (h *Host) Dir() string { return h.dir }

// Daemon is the Docker daemon the host runs (VXBRIDGE_TEST_DOCKER).
func (h *Host) Daemon() Daemon { return h.daemon }

// FirewallBackend is the dockerd --firewall-backend the host runs
// (HostOptions.FirewallBackend; "": the daemon's default, iptables).
func (h *Host) FirewallBackend() string { return h.opts.FirewallBackend }

// NetNS is the host's network namespace.
func (h *Host) NetNS() *NetNS { return h.ns }

// Footprint is what the host made, for checking after cleanup.
func (h *Host) Footprint() *Footprint { return h.footprint }

// DockerSocket is the path of dockerd's API socket.
func (h *Host) DockerSocket() string { return filepath.Join(h.dir, "docker.sock") }

// PluginsDir is bound at /run/docker/plugins for this host's dockerd.
func (h *Host) PluginsDir() string { return filepath.Join(h.dir, "plugins") }

// Dockerd is the running (or last) dockerd.
func (h *Host) Dockerd() *Process {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dockerd
}

// StartDockerd starts dockerd (again, after the test stopped or killed it)
// and waits until its API answers. NewHost calls it. On a host with a
// containerd of its own (NewHostOwnContainerd) it is
// StartDockerdOnContainerd: a dockerd started the plain way would run its
// own containerd in a new mount namespace, where neither the old shims'
// sockets nor the containers' network namespace mounts exist, and would
// drop the containers --live-restore was to keep.
func (h *Host) StartDockerd(t testing.TB) *Process {
	t.Helper()
	if d := h.Dockerd(); d != nil && !d.Exited() {
		t.Fatalf("%s: dockerd (pid %d) is still running", h.Name, d.Pid())
	}
	if h.opts.FirewallBackend == FirewallNFTables {
		h.Exec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	}
	if h.Containerd() != nil {
		return h.StartDockerdOnContainerd(t)
	}
	args := h.dockerdArgs()
	start := time.Now()
	p := h.startInNS(t, "dockerd", filepath.Join(h.dir, "dockerd.log"), args)
	h.waitDockerd(t, p, start)
	if pid, err := readPidFile(filepath.Join(h.dir, "docker.pid")); err != nil || pid != p.Pid() {
		t.Fatalf("%s: docker.pid holds %d (%v), started pid %d", h.Name, pid, err, p.Pid())
	}
	if pid, err := readPidFile(filepath.Join(h.dir, "exec", "containerd", "containerd.pid")); err == nil {
		if id, err := identify(pid); err == nil {
			h.footprint.addProc(id)
		}
	}
	t.Logf("%s: dockerd pid %d ready in %v (namespace %s, dir %s)",
		h.Name, p.Pid(), time.Since(start).Round(time.Millisecond), h.ns.Name, h.dir)
	return p
}

// StopDockerd stops dockerd with SIGTERM (SIGKILL after 30 s). With
// --live-restore the containers keep running.
func (h *Host) StopDockerd(t testing.TB) {
	t.Helper()
	if d := h.Dockerd(); d != nil {
		if err := d.StopTimeout(30 * time.Second); err != nil {
			t.Errorf("%s: %v", h.Name, err)
		}
	}
}

// Start runs argv inside the host (its network namespace, a private mount
// namespace with the host's /run/docker/plugins) with output to D/logName.
// The host owns the process: it is stopped when the host is torn down,
// after the containers are removed and before dockerd stops.
func (h *Host) Start(t testing.TB, logName string, argv ...string) *Process {
	t.Helper()
	return h.startOwned(t, logName, argv, true)
}

// startOwned is Start; privateMounts false runs argv in the machine's
// mount namespace instead (network namespace still the host's).
func (h *Host) startOwned(t testing.TB, logName string, argv []string, privateMounts bool) *Process {
	t.Helper()
	var p *Process
	if privateMounts {
		p = h.startInNS(t, logName, filepath.Join(h.dir, logName), argv)
	} else {
		p = h.startNetOnly(t, logName, filepath.Join(h.dir, logName), argv)
	}
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p
}

func (h *Host) startInNS(t testing.TB, name, logPath string, argv []string) *Process {
	t.Helper()
	nsenter, err := lookPath("nsenter")
	if err != nil {
		t.Fatal(err)
	}
	unshare, err := lookPath("unshare")
	if err != nil {
		t.Fatal(err)
	}
	full := append([]string{nsenter, "--net=" + h.ns.Path(), unshare, "-m",
		"/bin/sh", "-c", mountPreamble, "preamble", h.dir}, argv...)
	return h.startFull(t, name, logPath, full, argv)
}

// startNetOnly starts argv in the host's network namespace only.
func (h *Host) startNetOnly(t testing.TB, name, logPath string, argv []string) *Process {
	t.Helper()
	nsenter, err := lookPath("nsenter")
	if err != nil {
		t.Fatal(err)
	}
	full := append([]string{nsenter, "--net=" + h.ns.Path()}, argv...)
	return h.startFull(t, name, logPath, full, argv)
}

func (h *Host) startFull(t testing.TB, name, logPath string, full, argv []string) *Process {
	t.Helper()
	p, err := startProcess(name, logPath, full, argv, daemonEnv("DOCKER_CONFIG="+filepath.Join(h.dir, "cli")))
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	h.footprint.addProc(p.ident)
	return p
}

func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// cleanup tears the host down in an order that keeps it fast and complete:
// containers go while dockerd and the plugin still answer; then the host's
// processes, dockerd, and whatever survives them (containerd, shims,
// containers) found by namespace and cgroup; then the namespace and D.
func (h *Host) cleanup(t testing.TB) {
	start := time.Now()
	h.stopAll(t)
	if killed := h.sweep(); len(killed) > 0 {
		t.Logf("%s: killed processes that outlived dockerd:\n  %s", h.Name, strings.Join(killed, "\n  "))
	}
	if t.Failed() {
		h.logTails(t)
	}
	for _, err := range h.removeTraces() {
		t.Errorf("%s: %v", h.Name, err)
	}
	if left := h.footprint.Leftovers(); len(left) > 0 {
		t.Errorf("%s: left behind after cleanup:\n  %s", h.Name, strings.Join(left, "\n  "))
	}
	t.Logf("%s: torn down in %v", h.Name, time.Since(start).Round(time.Millisecond))
}

// stopAll removes the containers, then stops the host's processes and
// dockerd, each by its pid.
func (h *Host) stopAll(t testing.TB) {
	h.mu.Lock()
	dockerd, plugin := h.dockerd, h.plugin
	procs := append([]*Process(nil), h.procs...)
	h.mu.Unlock()

	if dockerd != nil && !dockerd.Exited() {
		if plugin != nil && plugin.Exited() {
			// Every container removal would wait 30 s for plugin retries.
			t.Logf("%s: plugin is not running: killing dockerd instead of removing containers", h.Name)
			_ = dockerd.Kill9()
		} else if err := h.removeAllContainers(); err != nil {
			t.Logf("%s: removing containers: %v", h.Name, err)
		}
	}
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].StopTimeout(10 * time.Second); err != nil {
			t.Errorf("%s: %v", h.Name, err)
		}
	}
	if dockerd != nil {
		if err := dockerd.StopTimeout(30 * time.Second); err != nil {
			t.Errorf("%s: %v", h.Name, err)
		}
	}
}

// removeTraces removes the cgroups, the namespace and D, once no process of
// the host is left.
func (h *Host) removeTraces() []error {
	var errs []error
	if err := removeCgroups(cgroupDirs(NamePrefix + h.id)); err != nil {
		errs = append(errs, err)
	}
	if err := h.ns.Delete(); err != nil {
		errs = append(errs, err)
	}
	if err := unmountUnder(h.dir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(h.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", h.dir, err))
	}
	return errs
}

// sweep kills the processes that are still inside the host's network
// namespace or cgroup tree: all started by this host, nothing else can be
// there.
func (h *Host) sweep() []string {
	cg := NamePrefix + h.id
	return killAll(func() []int {
		return append(h.ns.pids(), pidsInCgroups(cgroupDirs(cg))...)
	}, 20*time.Second)
}

func (h *Host) removeAllContainers() error {
	out, err := h.dockerTimeout(30*time.Second, nil, "ps", "-aq")
	if err != nil {
		return fmt.Errorf("docker ps: %w: %s", err, out)
	}
	ids := strings.Fields(out)
	if len(ids) == 0 {
		return nil
	}
	if out, err := h.dockerTimeout(2*time.Minute, nil, append([]string{"rm", "-f"}, ids...)...); err != nil {
		return fmt.Errorf("docker rm -f: %w: %s", err, out)
	}
	return nil
}

func (h *Host) logTails(t testing.TB) {
	ents, _ := os.ReadDir(h.dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".log") {
			t.Logf("%s: --- tail of %s ---\n%s", h.Name, e.Name(), tailFile(filepath.Join(h.dir, e.Name()), 60))
		}
	}
}

// waitDockerd makes p the host's dockerd, waits until it answers, and checks
// it runs the binary the host was given.
func (h *Host) waitDockerd(t testing.TB, p *Process, start time.Time) {
	t.Helper()
	h.mu.Lock()
	h.dockerd = p
	h.mu.Unlock()
	err := Poll(h.opts.StartTimeout, func() error {
		if p.Exited() {
			return Permanent(fmt.Errorf("dockerd exited: %v", p.ExitErr()))
		}
		_, err := h.dockerTimeout(10*time.Second, nil, "info", "--format", "{{.ID}}")
		return err
	})
	if err != nil {
		t.Fatalf("%s: dockerd not ready after %v: %v\n--- dockerd.log ---\n%s",
			h.Name, time.Since(start).Round(time.Millisecond), err, tail(p.Log(), 40))
	}
	if err := p.checkExe(h.dockerdBin); err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
}

// dockerdArgs is the host's dockerd command line, with extra before the
// options the test gave.
func (h *Host) dockerdArgs(extra ...string) []string {
	args := []string{h.dockerdBin,
		"--config-file", filepath.Join(h.dir, "daemon.json"),
		"--data-root", filepath.Join(h.dir, "data"),
		"--exec-root", filepath.Join(h.dir, "exec"),
		"-H", "unix://" + h.DockerSocket(),
		"--pidfile", filepath.Join(h.dir, "docker.pid"),
		"--cgroup-parent", "/" + NamePrefix + h.id,
	}
	args = append(args, extra...)
	if h.opts.Debug {
		args = append(args, "--debug")
	}
	if h.opts.FirewallBackend != "" {
		args = append(args, "--firewall-backend="+h.opts.FirewallBackend)
	}
	return append(args, h.opts.DockerdArgs...)
}
