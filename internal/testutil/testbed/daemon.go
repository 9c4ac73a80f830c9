package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Which Docker daemon the hosts run.
//
// VXBRIDGE_TEST_DOCKER picks it for the whole test binary:
//   - "current" (the default): the current daemon (moby v2, with containerd
//     v2 and a recent runc), built from the Go module proxy by
//     hack/build-docker.sh into a cache outside the work tree. Its directory
//     goes first on PATH for the host's daemons: dockerd starts the
//     containerd it finds there, containerd the shim and runc. Debian's runc
//     1.1.5 cannot run this daemon's containers (it knows no time
//     namespace). VXBRIDGE_TEST_DOCKER_BIN names a directory of such
//     binaries instead of running the script.
//   - "debian": Debian's docker.io (20.10, the oldest supported) with its
//     containerd and runc, as found on PATH and in /usr/sbin.
//
// Each daemon gets the client of its generation: the script builds the
// current one beside the daemon. Debian's 20.10 client (API 1.41) would
// reach the current daemon (minimum API 1.40) too, but a client older than
// API 1.48 always sends EnableIPv6=false, which the current daemon takes as
// --ipv6=false: -o com.docker.network.enable_ipv6 and daemon.json's
// default-network-opts would be dropped, for every driver.
const (
	DaemonEnv    = "VXBRIDGE_TEST_DOCKER"
	DaemonBinEnv = "VXBRIDGE_TEST_DOCKER_BIN"

	DaemonCurrent = "current"
	DaemonDebian  = "debian"
)

// buildDockerTimeout bounds hack/build-docker.sh: ~10 min cold on 2 cores,
// seconds from its cache.
const buildDockerTimeout = 40 * time.Minute

// daemonBinaries are what a daemon directory provides, looked up there first.
var daemonBinaries = map[string]bool{
	"dockerd": true, "docker-proxy": true, "containerd": true, "containerd-shim-runc-v2": true, "runc": true,
	"docker": true,
}

// Daemon is the Docker daemon the test binary's hosts run.
type Daemon struct {
	// Kind is DaemonCurrent or DaemonDebian.
	Kind string
	// BinDir holds its dockerd, containerd, shim, runc and client; empty
	// for Debian's, which are found on PATH.
	BinDir string
}

var (
	daemonMu       sync.Mutex
	daemonResolved *Daemon // set once, by the first host
)

// SelectedDaemon is the daemon VXBRIDGE_TEST_DOCKER picks, building the
// current one first when needed (see above). It fails the test when the
// setting is unknown or the build fails.
func SelectedDaemon(t testing.TB) Daemon {
	t.Helper()
	daemonMu.Lock()
	defer daemonMu.Unlock()
	if daemonResolved != nil {
		return *daemonResolved
	}
	d, err := resolveDaemon(os.Getenv(DaemonEnv), os.Getenv(DaemonBinEnv))
	if err != nil {
		t.Fatal(err)
	}
	daemonResolved = &d
	return d
}

// IsCurrent reports whether the hosts run the current daemon (not 20.10).
func (d Daemon) IsCurrent() bool { return d.Kind == DaemonCurrent }

func resolveDaemon(kind, binDir string) (Daemon, error) {
	switch kind {
	case "", DaemonCurrent:
		if binDir == "" {
			var err error
			if binDir, err = buildDocker(); err != nil {
				return Daemon{}, err
			}
		}
		for name := range daemonBinaries {
			if err := executable(filepath.Join(binDir, name)); err != nil {
				return Daemon{}, fmt.Errorf("%s=%s: %w", DaemonBinEnv, binDir, err)
			}
		}
		return Daemon{Kind: DaemonCurrent, BinDir: binDir}, nil
	case DaemonDebian:
		return Daemon{Kind: DaemonDebian}, nil
	default:
		return Daemon{}, fmt.Errorf("%s=%q: want %q or %q", DaemonEnv, kind, DaemonCurrent, DaemonDebian)
	}
}

// buildDocker runs hack/build-docker.sh (from its cache in seconds) and
// returns the directory it prints.
func buildDocker() (string, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate the repository to run hack/build-docker.sh: set %s", DaemonBinEnv)
	}
	script := filepath.Join(filepath.Dir(self), "..", "..", "..", "hack", "build-docker.sh")
	// Its last line of output is the directory; the rest is its log.
	out, err := runTimeout(exec.Command(script), buildDockerTimeout)
	if err != nil {
		return "", fmt.Errorf("%s (the current Docker daemon; %s=%s runs Debian's instead): %w\n%s",
			script, DaemonEnv, DaemonDebian, err, tail(string(out), 30))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}

func executable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// selectedBinDir is the current daemon's directory once a host resolved it,
// else "".
func selectedBinDir() string {
	daemonMu.Lock()
	defer daemonMu.Unlock()
	if daemonResolved == nil {
		return ""
	}
	return daemonResolved.BinDir
}

// daemonBin finds a daemon binary: in the selected daemon's directory first.
func daemonBin(name string) (string, error) {
	if dir := selectedBinDir(); dir != "" && daemonBinaries[name] {
		return filepath.Join(dir, name), nil
	}
	return lookPath(name)
}

// logDaemon says which daemon the host runs, from the daemon itself.
func (h *Host) logDaemon(t testing.TB) {
	t.Helper()
	out, err := h.dockerTimeout(30*time.Second, nil, "version", "--format",
		"docker {{.Server.Version}}, API {{.Server.APIVersion}} (minimum {{.Server.MinAPIVersion}}), client API {{.Client.APIVersion}}")
	if err != nil {
		t.Logf("%s: docker version: %v: %s", h.Name, err, out)
		return
	}
	from := "Debian's docker.io"
	if h.daemon.BinDir != "" {
		from = h.daemon.BinDir
	}
	t.Logf("%s: %s daemon, %s, from %s", h.Name, h.daemon.Kind, strings.TrimSpace(out), from)
}
