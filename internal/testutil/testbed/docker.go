package testbed

import (
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/iptest"
)

// DockerTimeout bounds each docker client call.
const DockerTimeout = 2 * time.Minute

// Docker runs the docker client against the host's dockerd and returns its
// combined output.
func (h *Host) Docker(args ...string) (string, error) {
	return h.dockerTimeout(DockerTimeout, nil, args...)
}

// MustDocker is Docker failing the test, with the output, on error.
func (h *Host) MustDocker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := h.Docker(args...)
	if err != nil {
		t.Fatalf("%s: docker %s: %v\n%s", h.Name, strings.Join(args, " "), err, out)
	}
	return out
}

func (h *Host) dockerTimeout(timeout time.Duration, stdin io.Reader, args ...string) (string, error) {
	full := append([]string{"-H", "unix://" + h.DockerSocket()}, args...)
	cmd := exec.Command(h.dockerBin, full...)
	// Its own config dir: the user's ~/.docker (contexts, a newer client's
	// settings) must not change what the tests run.
	cmd.Env = daemonEnv("DOCKER_CONFIG=" + filepath.Join(h.dir, "cli"))
	cmd.Stdin = stdin
	out, err := runTimeout(cmd, timeout)
	return string(out), err
}

// Exec runs a command inside the host's network namespace (ip, iptables-save,
// bridge...) and returns its combined output, failing the test on error.
func (h *Host) Exec(t testing.TB, name string, args ...string) string {
	t.Helper()
	return h.ns.Exec(t, name, args...)
}

// TryExec is Exec returning the error instead of failing the test.
func (h *Host) TryExec(name string, args ...string) (string, error) {
	return h.ns.TryExec(name, args...)
}

// counters matches packet/byte counters in iptables-save output ("[12:345]").
var counters = regexp.MustCompile(`\s*\[\d+:\d+\]`)

// IPTablesSave is the IPv4 and IPv6 rule set of the host's namespace with
// comment lines and counters removed, for before/after comparison. Every
// chain is kept, docker's included, and every table but the empty ones
// (built-in chains with an ACCEPT policy and no rule): iptables-nft makes a
// table on first use and leaves it, so the current daemon leaves an empty
// raw table behind after a container on docker0 goes. It filters nothing.
func IPTablesSave(t testing.TB, h *Host) string {
	t.Helper()
	var b strings.Builder
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		b.WriteString("### " + tool + "\n")
		b.WriteString(iptest.WithoutEmptyTables(normaliseIPTables(h.Exec(t, tool))))
	}
	return b.String()
}

func normaliseIPTables(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		b.WriteString(counters.ReplaceAllString(line, ""))
		b.WriteByte('\n')
	}
	return b.String()
}

// Poll calls fn every 100 ms until it returns nil or timeout passes, and
// returns fn's last error then. An error wrapped with Permanent ends the
// wait at once (the daemon being waited for has exited).
func Poll(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return perm.err
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Permanent marks an error that no amount of waiting will cure, ending Poll
// and WaitFor early.
func Permanent(err error) error { return permanentError{err} }

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// WaitFor is Poll failing the test with fn's last error on timeout. Use it
// only where convergence is legitimately asynchronous.
func WaitFor(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	start := time.Now()
	if err := Poll(timeout, fn); err != nil {
		t.Fatalf("not true after %v: %v", time.Since(start).Round(time.Millisecond), err)
	}
}
