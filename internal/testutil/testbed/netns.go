package testbed

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NamePrefix starts the name of every namespace and state directory the
// testbed makes, so leftovers are easy to spot (`ip netns list`).
const NamePrefix = "vxt-"

// NetNS is a named network namespace made with `ip netns add`.
type NetNS struct {
	Name  string
	inode uint64 // identifies the namespace even after its name is gone
}

// Path is the namespace's bind mount, for nsenter --net=PATH.
func (n *NetNS) Path() string { return "/var/run/netns/" + n.Name }

// newNetNS makes a namespace named NamePrefix+id with lo up. The caller
// deletes it (Delete), after stopping what it started inside.
func newNetNS(id string) (*NetNS, error) {
	n := &NetNS{Name: NamePrefix + id}
	if out, err := run("ip", "netns", "add", n.Name); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", n.Name, err, out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(n.Path(), &st); err != nil {
		n.Delete()
		return nil, fmt.Errorf("stat %s: %w", n.Path(), err)
	}
	n.inode = st.Ino
	if out, err := run("ip", "-n", n.Name, "link", "set", "lo", "up"); err != nil {
		n.Delete()
		return nil, fmt.Errorf("lo up in %s: %w: %s", n.Name, err, out)
	}
	return n, nil
}

// NewNetNS makes a bare namespace (lo up) that is deleted, with every process
// still inside it, when the test ends: an underlay switch or a remote peer.
func NewNetNS(t testing.TB) *NetNS {
	t.Helper()
	RequireRoot(t)
	id, err := newID()
	if err != nil {
		t.Fatal(err)
	}
	n, err := newNetNS(id)
	if err != nil {
		t.Fatal(err)
	}
	track(&Footprint{NetNS: []*NetNS{n}})
	t.Cleanup(func() {
		if err := n.Delete(); err != nil {
			t.Errorf("delete namespace %s: %v", n.Name, err)
		}
	})
	return n
}

// Delete kills every process left in the namespace and deletes it. Links in
// it vanish with it, veth peers in other namespaces too. Deleting a
// namespace that is already gone succeeds.
func (n *NetNS) Delete() error {
	killAll(n.pids, 10*time.Second)
	if _, err := os.Stat(n.Path()); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := run("ip", "netns", "del", n.Name); err != nil {
		return fmt.Errorf("ip netns del %s: %w: %s", n.Name, err, out)
	}
	return nil
}

// pids lists the processes inside the namespace while it still exists.
// Once its name is gone the kernel may give its inode number to a new
// namespace, one another test binary made: matching by inode then would
// find (and kill) processes that are not ours, so a namespace that is gone
// has no processes we can know of.
func (n *NetNS) pids() []int {
	if n.inode == 0 {
		return nil
	}
	st, err := os.Stat(n.Path())
	if err != nil {
		return nil
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || sys.Ino != n.inode {
		return nil
	}
	return pidsInNetNS(n.inode)
}

// Exec runs a command inside the namespace (nsenter --net, the machine's
// mount namespace: /sys is the machine's, /proc/sys/net the namespace's) and
// returns its combined output, failing the test on error.
func (n *NetNS) Exec(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.TryExec(name, args...)
	if err != nil {
		t.Fatalf("in %s: %s %s: %v\n%s", n.Name, name, strings.Join(args, " "), err, out)
	}
	return out
}

// TryExec is Exec returning the error instead of failing the test.
func (n *NetNS) TryExec(name string, args ...string) (string, error) {
	path, err := lookPath(name)
	if err != nil {
		return "", err
	}
	full := append([]string{"--net=" + n.Path(), path}, args...)
	return run("nsenter", full...)
}

// Start runs a daemon inside the namespace (nsenter --net, the machine's
// mount namespace) with output to logPath; it is stopped when the test ends
// and its log tail printed if the test failed.
func (n *NetNS) Start(t testing.TB, logPath string, argv ...string) *Process {
	t.Helper()
	nsenter, err := lookPath("nsenter")
	if err != nil {
		t.Fatal(err)
	}
	bin, err := lookPath(argv[0])
	if err != nil {
		t.Fatal(err)
	}
	full := append([]string{nsenter, "--net=" + n.Path(), bin}, argv[1:]...)
	p, err := startProcess(filepath.Base(argv[0]), logPath, full, argv, daemonEnv())
	if err != nil {
		t.Fatal(err)
	}
	track(&Footprint{procs: []procIdent{p.ident}})
	t.Cleanup(func() {
		if err := p.StopTimeout(10 * time.Second); err != nil {
			t.Errorf("%v", err)
		}
		if t.Failed() {
			t.Logf("--- %s ---\n%s", filepath.Base(logPath), tail(p.Log(), 40))
		}
	})
	return p
}

// Veth joins two namespaces with a veth pair, nameA in a and nameB in b, both
// up. Names are per namespace, so short fixed names ("eth1") are fine.
// The pair vanishes with either namespace.
func Veth(t testing.TB, a *NetNS, nameA string, b *NetNS, nameB string) {
	t.Helper()
	// Created directly in their namespaces: a name taken in the machine's
	// namespace does not collide.
	if out, err := run("ip", "link", "add", nameA, "netns", a.Name, "type", "veth",
		"peer", "name", nameB, "netns", b.Name); err != nil {
		t.Fatalf("veth %s/%s - %s/%s: %v: %s", a.Name, nameA, b.Name, nameB, err, out)
	}
	a.Exec(t, "ip", "link", "set", nameA, "up")
	b.Exec(t, "ip", "link", "set", nameB, "up")
}

// newID is six random lowercase letters and digits: short enough for
// interface names and socket paths, unlikely to collide between parallel
// test binaries (names are also checked when made).
func newID() (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b), nil
}

// newStateDir makes /tmp/vxt-ID for an ID whose namespace name is also free.
func newStateDir() (id, dir string, err error) {
	base := "/tmp"
	if st, err := os.Stat(base); err != nil || !st.IsDir() {
		base = os.TempDir()
	}
	for range 10 {
		if id, err = newID(); err != nil {
			return "", "", err
		}
		if _, err := os.Stat("/var/run/netns/" + NamePrefix + id); err == nil {
			continue
		}
		dir = filepath.Join(base, NamePrefix+id)
		if err := os.Mkdir(dir, 0o700); err == nil {
			return id, dir, nil
		} else if !errors.Is(err, os.ErrExist) {
			return "", "", err
		}
	}
	return "", "", errors.New("no free testbed name after 10 tries")
}

// run runs a short command with a 2 minute timeout, returning combined output.
// ExecAt runs a command in the network namespace mounted at nsPath (such
// as one of the plugin's, under PluginNetNSDir) and returns its combined
// output.
func ExecAt(nsPath, name string, args ...string) (string, error) {
	path, err := lookPath(name)
	if err != nil {
		return "", err
	}
	return run("nsenter", append([]string{"--net=" + nsPath, path}, args...)...)
}

func run(name string, args ...string) (string, error) {
	path, err := lookPath(name)
	if err != nil {
		return "", err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = daemonEnv()
	out, err := runTimeout(cmd, 2*time.Minute)
	return string(out), err
}

// runTimeout runs cmd, killing it after timeout, and returns combined output.
func runTimeout(cmd *exec.Cmd, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	c.Env, c.Dir, c.Stdin = cmd.Env, cmd.Dir, cmd.Stdin
	// A grandchild holding the output pipe must not hang us past the timeout.
	c.WaitDelay = 5 * time.Second
	out, err := c.CombinedOutput()
	if ctx.Err() != nil {
		return out, fmt.Errorf("%s: timed out after %v: %w", filepath.Base(cmd.Path), timeout, err)
	}
	return out, err
}
