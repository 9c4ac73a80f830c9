package firewall

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

// within runs fn and fails the test if it has not returned after limit (a
// defence removed would otherwise hang the test instead of failing it).
func within(t *testing.T, limit time.Duration, fn func() error) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err, time.Since(start)
	case <-time.After(limit):
		t.Fatalf("still running after %v", limit)
		return nil, 0
	}
}

// A program that hangs (here a script whose child holds the output pipe)
// is killed with its whole process group at the deadline; the error names
// the command and says it timed out.
func TestProgramTimesOut(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "iptables-hangs")
	pidFile := filepath.Join(dir, "child.pid")
	body := "#!/bin/sh\nsleep 60 &\necho $! > " + pidFile + "\nwait\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	err, took := within(t, 10*time.Second, func() error {
		_, err := runProgram(limits{lockWait: time.Second, timeout: 300 * time.Millisecond}, "", script, "-w", "1", "-S")
		return err
	})
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), script+" -w 1 -S: timed out after 300ms") {
		t.Fatalf("err = %v, want a timeout naming the command", err)
	}
	t.Logf("returned after %v: %v", took.Round(time.Millisecond), err)
	b, _ := os.ReadFile(pidFile)
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for child > 0 && syscall.Kill(child, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(child, syscall.SIGKILL)
			t.Fatalf("the program's child %d outlived the timeout", child)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProgramErrorKeepsStderr(t *testing.T) {
	_, err := runProgram(defaultLimits, "", "sh", "-c", "echo 'line 3 failed' >&2; exit 2")
	var perr *ProgramError
	if !errors.As(err, &perr) || perr.Stderr != "line 3 failed" || !strings.Contains(err.Error(), "exit status 2") {
		t.Errorf("err = %#v", err)
	}
}

// A held xtables lock (flock on the file XTABLES_LOCKFILE names, as on the
// host's /run/xtables.lock) makes iptables-legacy give up after -w, with
// its own message; a program that would wait longer is killed at the
// deadline. Either way the caller gets an error in bounded time, and the
// firewall works again once the lock is released.
func TestHeldXtablesLockFailsInBoundedTime(t *testing.T) {
	if _, err := exec.LookPath("iptables-legacy"); err != nil {
		t.Skip("iptables-legacy not installed")
	}
	ns, f, unlock := lockedFamily(t)

	f.limits = limits{lockWait: time.Second, timeout: 10 * time.Second}
	err, took := within(t, 15*time.Second, func() error { return ns.Do(func() error { _, err := f.read(); return err }) })
	t.Logf("read with the lock held: %v after %v", err, took.Round(time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "xtables lock") || took > 5*time.Second {
		t.Errorf("read with the lock held: %v after %v; want iptables' lock message within seconds", err, took)
	}
	// Stuck by now: the stalled limits are in force.
	f.stalled = limits{lockWait: time.Minute, timeout: time.Second}
	err, took = within(t, 15*time.Second, func() error { return ns.Do(func() error { return f.apply("*filter\nCOMMIT\n") }) })
	t.Logf("apply with the lock held: %v after %v", err, took.Round(time.Millisecond))
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "iptables-legacy-restore") || took > 5*time.Second {
		t.Errorf("apply with the lock held: %v after %v; want a timeout naming iptables-legacy-restore", err, took)
	}

	unlock()
	do(t, ns, func() error { _, err := f.read(); return err })
}

// While the lock stays held, every run after the first that found it so
// waits the short stalled limits, not the whole -w again: operations that
// queue behind each other (the Firewall runs one at a time) fail in about
// a second each. The first run after the lock is free succeeds and puts
// the normal limits back.
func TestStuckIptablesFailsFastUntilFree(t *testing.T) {
	if _, err := exec.LookPath("iptables-legacy"); err != nil {
		t.Skip("iptables-legacy not installed")
	}
	ns, f, unlock := lockedFamily(t)
	f.limits = limits{lockWait: 3 * time.Second, timeout: 10 * time.Second}
	f.stalled = limits{lockWait: time.Second, timeout: 5 * time.Second}
	read := func() (error, time.Duration) {
		return within(t, 15*time.Second, func() error { return ns.Do(func() error { _, err := f.read(); return err }) })
	}
	err, first := read()
	t.Logf("first read: %v after %v", err, first.Round(time.Millisecond))
	if err == nil || first < 2*time.Second {
		t.Fatalf("first read with the lock held: %v after %v; want a failure after the whole -w", err, first)
	}
	for i := range 3 {
		err, took := read()
		t.Logf("read %d while stuck: %v after %v", i+2, err, took.Round(time.Millisecond))
		if err == nil || took > 2*time.Second || !strings.Contains(err.Error(), "iptables stuck since") {
			t.Errorf("read %d while stuck: %v after %v; want a failure saying so within 2 s", i+2, err, took)
		}
	}
	unlock()
	if err, _ := read(); err != nil || !f.stuckSince.IsZero() {
		t.Errorf("read once the lock is free: %v (stuck since %v)", err, f.stuckSince)
	}
}

// lockedFamily is an IPv4 iptables-legacy family in a fresh namespace,
// with its xtables lock (a file of the test's, XTABLES_LOCKFILE) held;
// unlock releases it.
func lockedFamily(t *testing.T) (*nstest.NS, *family, func()) {
	t.Helper()
	ns := nstest.New(t)
	lockPath := filepath.Join(t.TempDir(), "xtables.lock")
	t.Setenv("XTABLES_LOCKFILE", lockPath)
	var f *family
	do(t, ns, func() error {
		f = newFamily(false, BackendLegacy)
		return f.err
	})
	lock, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	return ns, f, func() {
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_UN); err != nil {
			t.Fatal(err)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for out, want := range map[string][3]int{
		"iptables v1.8.9 (nf_tables)\n": {1, 8, 9},
		"ip6tables v1.6.2\n":            {1, 6, 2},
		"garbage":                       {0, 0, 0},
	} {
		if got := parseVersion(out); got != want {
			t.Errorf("parseVersion(%q) = %v, want %v", out, got, want)
		}
	}
}
