package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Own containerd: why and how.
//
// By default dockerd starts and supervises its own containerd. That one
// cannot carry containers across a dockerd `kill -9`, which --live-restore
// needs:
//   - dockerd 20.10 starts it with Pdeathsig SIGKILL (moby's
//     libcontainerd/supervisor), so containerd dies with dockerd; its shims
//     and containers live on, orphaned;
//   - a restarted dockerd starts a new containerd in a NEW private mount
//     namespace (every testbed daemon gets one), with a fresh tmpfs on
//     /run/containerd, where containerd keeps the shims' sockets
//     (/run/containerd/s/HASH: the path is fixed in containerd 1.6). The
//     old shims' sockets are in the old namespace's tmpfs: the new
//     containerd cannot reach them, and dockerd treats the containers as
//     dead.
//
// NewHostOwnContainerd runs containerd as a host process of its own (the
// testbed's preamble and mount namespace, state under D/containerd) and
// every dockerd of the host with --containerd pointing at it, entered into
// containerd's mount namespace: the overlay mounts dockerd makes for a
// container's root file system must be visible to containerd and runc, and
// the shims' sockets stay reachable for as long as containerd runs. A
// dockerd killed with -9 then leaves containerd, the shims and the
// containers running, and a restarted dockerd with --live-restore takes
// them back.

// NewHostOwnContainerd is NewHost whose dockerd uses a containerd of its
// own (see above) instead of the one dockerd supervises. The host's first
// dockerd (started by NewHost with its own containerd, before any
// container exists) is stopped and replaced. The containerd is a host
// process: torn down with the host, after the containers are removed.
func NewHostOwnContainerd(t testing.TB, opts HostOptions) *Host {
	t.Helper()
	h := NewHost(t, opts)
	h.StopDockerd(t)
	h.StartContainerd(t)
	h.StartDockerdOnContainerd(t)
	return h
}

// ContainerdSocket is the API socket of the host's own containerd.
func (h *Host) ContainerdSocket() string {
	return filepath.Join(h.dir, "containerd", "containerd.sock")
}

// Containerd is the host's own containerd (NewHostOwnContainerd), or nil.
func (h *Host) Containerd() *Process {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.procs) - 1; i >= 0; i-- {
		if h.procs[i].name == "containerd.log" {
			return h.procs[i]
		}
	}
	return nil
}

// StartContainerd starts the host's own containerd (root, state and sockets
// under D/containerd, the CRI plugin off as dockerd's own configuration has
// it) and waits until its socket accepts connections.
func (h *Host) StartContainerd(t testing.TB) *Process {
	t.Helper()
	if c := h.Containerd(); c != nil && !c.Exited() {
		t.Fatalf("%s: containerd (pid %d) is still running", h.Name, c.Pid())
	}
	bin, err := daemonBin("containerd")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(h.dir, "containerd")
	if err := os.MkdirAll(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  level = "info"
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), h.ContainerdSocket(), h.ContainerdSocket()+".ttrpc")
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p := h.Start(t, "containerd.log", bin, "--config", cfgPath)
	err = Poll(30*time.Second, func() error {
		if p.Exited() {
			return Permanent(fmt.Errorf("containerd exited: %v", p.ExitErr()))
		}
		_, err := os.Stat(h.ContainerdSocket())
		return err
	})
	if err != nil {
		t.Fatalf("%s: containerd not ready after %v: %v\n--- containerd.log ---\n%s",
			h.Name, time.Since(start).Round(time.Millisecond), err, tail(p.Log(), 40))
	}
	if err := p.checkExe(bin); err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	t.Logf("%s: containerd pid %d ready in %v", h.Name, p.Pid(), time.Since(start).Round(time.Millisecond))
	return p
}

// StartDockerdOnContainerd starts dockerd (again, after the test stopped or
// killed it) in the mount namespace of the host's own containerd, with
// --containerd pointing at it, and waits until its API answers.
func (h *Host) StartDockerdOnContainerd(t testing.TB) *Process {
	t.Helper()
	if d := h.Dockerd(); d != nil && !d.Exited() {
		t.Fatalf("%s: dockerd (pid %d) is still running", h.Name, d.Pid())
	}
	c := h.Containerd()
	if c == nil || c.Exited() {
		t.Fatalf("%s: no running containerd of the host's own: StartContainerd first", h.Name)
	}
	nsenter, err := lookPath("nsenter")
	if err != nil {
		t.Fatal(err)
	}
	args := h.dockerdArgs("--containerd", h.ContainerdSocket())
	full := append([]string{nsenter, "--net=" + h.ns.Path(), fmt.Sprintf("--mount=/proc/%d/ns/mnt", c.Pid())}, args...)
	start := time.Now()
	p, err := startProcess("dockerd", filepath.Join(h.dir, "dockerd.log"), full, args,
		daemonEnv("DOCKER_CONFIG="+filepath.Join(h.dir, "cli")))
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	h.footprint.addProc(p.ident)
	h.waitDockerd(t, p, start)
	t.Logf("%s: dockerd pid %d on containerd pid %d ready in %v", h.Name, p.Pid(), c.Pid(), time.Since(start).Round(time.Millisecond))
	return p
}
