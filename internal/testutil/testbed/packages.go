package testbed

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireRoot skips the test, saying why, unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("end-to-end tier: needs root to create network namespaces and run dockerd (run `sudo go test ./e2e/`)")
	}
}

// requirement is a command the testbed runs and the Debian package that
// ships it.
type requirement struct {
	command string
	pkg     string
	// ok, when set, checks the command found is usable (not only present).
	ok func(path string) error
}

// baseRequirements are what every Host needs.
var baseRequirements = []requirement{
	{command: "dockerd", pkg: "docker.io"},
	{command: "docker", pkg: "docker.io"},
	{command: "containerd", pkg: "containerd"},
	{command: "runc", pkg: "runc"},
	{command: "iptables", pkg: "iptables"},
	{command: "iptables-save", pkg: "iptables"},
	{command: "busybox", pkg: "busybox-static", ok: requireStatic},
	{command: "ip", pkg: "iproute2"},
	{command: "nsenter", pkg: "util-linux"},
	{command: "unshare", pkg: "util-linux"},
}

// EnsurePackages installs, when a command the testbed needs is missing and
// the test runs as root, the Debian packages that ship them. apt runs at most
// once per test binary and under a file lock, so parallel test binaries do
// not collide on apt's own lock. It fails the test with apt's output when the
// installation fails.
func EnsurePackages(t testing.TB) {
	t.Helper()
	ensure(t, baseRequirements)
}

// EnsureCommands is EnsurePackages for extra tools a test needs, given as
// command -> Debian package (e.g. "etcd": "etcd-server", "iperf3": "iperf3").
func EnsureCommands(t testing.TB, commands map[string]string) {
	t.Helper()
	var reqs []requirement
	for c, p := range commands {
		reqs = append(reqs, requirement{command: c, pkg: p})
	}
	ensure(t, reqs)
}

var aptMu sync.Mutex // serialises apt within this test binary; the flock across binaries

func ensure(t testing.TB, reqs []requirement) {
	t.Helper()
	missing := missingPackages(reqs)
	if len(missing) == 0 {
		return
	}
	RequireRoot(t)
	aptMu.Lock()
	defer aptMu.Unlock()
	unlock, err := lockFile(filepath.Join(os.TempDir(), "vxtestbed-apt.lock"))
	if err != nil {
		t.Fatalf("lock for apt: %v", err)
	}
	defer unlock()
	// Another binary may have installed them while we waited for the lock.
	missing = missingPackages(reqs)
	if len(missing) == 0 {
		return
	}
	t.Logf("installing missing packages: %s", strings.Join(missing, " "))
	if out, err := apt("update"); err != nil {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	args := append([]string{"install", "-y", "--no-install-recommends"}, missing...)
	if out, err := apt(args...); err != nil {
		t.Fatalf("apt-get install %s: %v\n%s", strings.Join(missing, " "), err, out)
	}
	if still := missingPackages(reqs); len(still) > 0 {
		t.Fatalf("still missing after apt-get install: %s", strings.Join(still, " "))
	}
}

// missingPackages lists, deduplicated, the packages of requirements whose
// command is missing or unusable.
func missingPackages(reqs []requirement) []string {
	var pkgs []string
	seen := map[string]bool{}
	for _, r := range reqs {
		path, err := lookPath(r.command)
		if err == nil && r.ok != nil {
			err = r.ok(path)
		}
		if err != nil && !seen[r.pkg] {
			seen[r.pkg] = true
			pkgs = append(pkgs, r.pkg)
		}
	}
	return pkgs
}

func apt(args ...string) (string, error) {
	// DPkg::Lock::Timeout makes apt wait for a lock held by something else
	// (unattended-upgrades) instead of failing at once.
	full := append([]string{"-o", "DPkg::Lock::Timeout=300"}, args...)
	cmd := exec.Command("apt-get", full...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := runTimeout(cmd, 15*time.Minute)
	return string(out), err
}

func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("flock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// requireStatic refuses a dynamically linked binary: the test image has no
// libraries (Debian's "busybox" package is dynamic, "busybox-static" is not).
func requireStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked", path)
		}
	}
	return nil
}

// sbinPath are appended to PATH for lookups and for the daemons we start:
// `sudo` or CI runners may hand us a PATH without /usr/sbin, where dockerd
// and iptables live, and dockerd itself looks up containerd and runc in PATH.
const sbinPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func lookPath(cmd string) (string, error) {
	if p, err := exec.LookPath(cmd); err == nil {
		return p, nil
	}
	for _, dir := range filepath.SplitList(sbinPath) {
		p := filepath.Join(dir, cmd)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q not found in PATH or %s", cmd, sbinPath)
}

// dockerClient is the client of the daemon's own generation: the one built
// with the current daemon (see daemon.go for why not 20.10's), or for
// Debian's daemon Debian's client (/usr/bin/docker, API 1.41) over a newer
// one earlier in PATH.
func dockerClient(d Daemon) (string, error) {
	if d.BinDir != "" {
		return filepath.Join(d.BinDir, "docker"), nil
	}
	if st, err := os.Stat("/usr/bin/docker"); err == nil && !st.IsDir() {
		return "/usr/bin/docker", nil
	}
	return lookPath("docker")
}

// daemonEnv is the environment for processes the testbed starts: the
// selected daemon's directory first on PATH (dockerd finds containerd,
// docker-proxy and runc there).
func daemonEnv(extra ...string) []string {
	var env []string
	first := ""
	if dir := selectedBinDir(); dir != "" {
		first = dir + ":"
	}
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, "PATH="):
			env = append(env, "PATH="+first+strings.TrimPrefix(kv, "PATH=")+":"+sbinPath)
		case strings.HasPrefix(kv, "DOCKER_"):
			// DOCKER_HOST, DOCKER_CONTEXT, DOCKER_CONFIG... of the user must
			// not redirect our client to another daemon.
		default:
			env = append(env, kv)
		}
	}
	if os.Getenv("PATH") == "" {
		env = append(env, "PATH="+first+sbinPath)
	}
	return append(env, extra...)
}
