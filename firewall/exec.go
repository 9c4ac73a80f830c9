package firewall

// Running iptables programs with deadlines.
//
// iptables-legacy waits for the xtables lock (/run/xtables.lock, or
// XTABLES_LOCKFILE) that any other iptables run on the host may hold; with a
// bare -w it waits forever, and vxbridge runs it under the driver's lock,
// so one stuck `iptables` elsewhere used to stop every docker network call.
// Every program here runs with -w <lockWait> where it takes the lock (so
// iptables gives up first, with its own "Another app is currently holding
// the xtables lock" message), and under a context deadline that kills its
// whole process group (iptables-nft never takes the lock but can hang on
// nf_tables; a wrapper script may fork). The error names the command and
// says it timed out.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrTimeout classifies an iptables program that did not finish in time.
var ErrTimeout = errors.New("timed out")

// limits bound one run of an iptables program.
type limits struct {
	lockWait time.Duration // -w: how long iptables waits for the xtables lock
	timeout  time.Duration // killed after this
}

// defaultLimits: iptables holds the lock for milliseconds, so 10 s of
// waiting means something is stuck, and the error still reaches docker
// within the 30 s it gives a managed plugin's call.
var defaultLimits = limits{lockWait: 10 * time.Second, timeout: 20 * time.Second}

// stalledLimits bound the runs while iptables is stuck (family.stalled):
// enough for a lock another iptables holds for milliseconds, so a docker
// call fails in about a second, not ten, for as long as it stays stuck.
var stalledLimits = limits{lockWait: time.Second, timeout: 5 * time.Second}

// waitArgs are the -w arguments for lim (whole seconds, at least 1).
func (lim limits) waitArgs() []string {
	return []string{"-w", strconv.Itoa(max(1, int(lim.lockWait/time.Second)))}
}

// runProgram runs name with args and stdin ("" for none) within lim and
// returns its standard output. A failure's error holds the command line and
// what the program printed on standard error.
func runProgram(lim limits, stdin, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), lim.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second // a child still holding the pipes does not hold us
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	line := strings.Join(append([]string{name}, args...), " ")
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return "", &ProgramError{Command: line, Err: fmt.Errorf("%w after %v (killed)", ErrTimeout, lim.timeout),
			Stderr: oneLine(stderr.String())}
	}
	if err != nil {
		return out.String(), &ProgramError{Command: line, Err: err, Stderr: oneLine(stderr.String())}
	}
	return out.String(), nil
}

// ProgramError is a failed or timed-out run of an iptables program.
type ProgramError struct {
	Command string // the command line
	Err     error  // the exit status, or ErrTimeout
	Stderr  string // what it printed on standard error, on one line
}

func (e *ProgramError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("%s: %v", e.Command, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Command, e.Err, e.Stderr)
}

func (e *ProgramError) Unwrap() error { return e.Err }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
