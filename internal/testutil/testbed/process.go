package testbed

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a daemon the testbed started (dockerd, the plugin, a server in a
// namespace). Its pid is the daemon's own: the nsenter/unshare/sh preamble
// execs. It is reaped by the testbed; signal it only through these methods.
type Process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	ident   procIdent
	done    chan struct{}
	waitErr error
}

// startProcess starts argv with stdout and stderr appended to logPath;
// shown (the daemon's own command line, without the namespace preamble)
// heads its part of the log.
func startProcess(name, logPath string, argv, shown, env []string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== testbed: starting %s at %s: %s\n", name,
		time.Now().Format(time.RFC3339Nano), strings.Join(shown, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf // files: the child writes them directly
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// If the test binary dies (go test -timeout panics skip cleanups),
		// its daemons get SIGTERM instead of running on forever.
		Pdeathsig: syscall.SIGTERM,
		Setpgid:   true, // ^C in the terminal goes to the test, not to dockerd
	}
	if err := startOnSpawner(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	p.ident, _ = identify(cmd.Process.Pid)
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// spawner is a goroutine locked to an OS thread that never ends, which
// forks every daemon. Pdeathsig follows the thread that forked the child,
// not the process, and Go ends a thread whose goroutine ends locked to it,
// as the tests' namespace hops do: a daemon forked from such a thread got
// SIGTERM when the thread went (dockerd died within a second of its restart
// in TestFirewallOrderAcrossDockerdRestart, whose knocker hops constantly).
var spawner = sync.OnceValue(func() chan<- func() {
	jobs := make(chan func())
	go func() {
		runtime.LockOSThread() // never unlocked: the thread lives as long as the test binary
		for job := range jobs {
			job()
		}
	}()
	return jobs
})

// startOnSpawner runs cmd.Start on the spawner's thread.
func startOnSpawner(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	spawner() <- func() { errc <- cmd.Start() }
	return <-errc
}

// Pid is the daemon's pid.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Name is what the testbed calls the process in logs ("dockerd", "plugin").
func (p *Process) Name() string { return p.name }

// Exited reports whether the process has ended (and was reaped).
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitErr is the result of waiting for the process; nil while it runs.
func (p *Process) ExitErr() error {
	if !p.Exited() {
		return nil
	}
	return p.waitErr
}

// Kill9 sends SIGKILL and waits until the process is gone. Killing an ended
// process is a no-op.
func (p *Process) Kill9() error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill -9 %s (pid %d): %w", p.name, p.Pid(), err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s (pid %d) still there 30s after SIGKILL", p.name, p.Pid())
	}
}

// Stop sends SIGTERM, waits up to 20 s, then SIGKILLs.
func (p *Process) Stop() error { return p.StopTimeout(20 * time.Second) }

// StopTimeout is Stop with its own grace period.
func (p *Process) StopTimeout(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill -TERM %s (pid %d): %w", p.name, p.Pid(), err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	if err := p.Kill9(); err != nil {
		return err
	}
	return fmt.Errorf("%s (pid %d) ignored SIGTERM for %v and was killed", p.name, p.Pid(), grace)
}

// Log is everything the process (and earlier processes sharing its log file,
// such as a plugin before its restart) wrote to stdout and stderr.
func (p *Process) Log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// LogPath is the file holding the process's output.
func (p *Process) LogPath() string { return p.logPath }

// checkExe verifies the pid runs want: nsenter, unshare and sh must all have
// exec'd rather than forked, or signals would hit a wrapper.
func (p *Process) checkExe(want string) error {
	want, err := filepath.EvalSymlinks(want)
	if err != nil {
		return err
	}
	got, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid()))
	if err != nil {
		return fmt.Errorf("pid %d: %w", p.Pid(), err)
	}
	if got != want {
		return fmt.Errorf("pid %d runs %s, not %s: a wrapper forked instead of exec'ing", p.Pid(), got, want)
	}
	return nil
}

// tail is the last n lines of s, without grpc connection chatter (dockerd
// logs a dozen such lines per containerd reconnect).
func tail(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if !strings.Contains(l, "module=grpc") {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return tail(string(b), n)
}
