package main

import (
	"errors"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// In a mount namespace where /proc/sys is read-only as docker makes it,
// --writable-proc-sys makes /proc/sys/net writable and nothing else. The
// test runs itself again under `unshare -m -n` (a mount and a network
// namespace of its own: the writes change nothing of the machine's).
func TestProcSysNetOnlyWritable(t *testing.T) {
	if os.Getenv("VXBRIDGE_TEST_PROCSYS") == "" {
		if os.Geteuid() != 0 {
			t.Skip("needs root for a mount namespace")
		}
		cmd := exec.Command("unshare", "-m", "-n", "--propagation", "private", os.Args[0], "-test.run=^TestProcSysNetOnlyWritable$", "-test.count=1")
		cmd.Env = append(os.Environ(), "VXBRIDGE_TEST_PROCSYS=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("in a namespace of its own: %v\n%s", err, out)
		}
		return
	}
	// As docker's spec does: a read-only bind of /proc/sys on itself.
	if err := unix.Mount("/proc/sys", "/proc/sys", "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", "/proc/sys", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	if err := remountProcSysNetWritable(); err != nil {
		t.Fatal(err)
	}
	if err := rewrite("/proc/sys/net/ipv4/ip_forward"); err != nil {
		t.Errorf("/proc/sys/net is not writable: %v", err)
	}
	if err := rewrite("/proc/sys/kernel/hostname"); !errors.Is(err, unix.EROFS) {
		t.Errorf("/proc/sys/kernel: %v, want it left read-only", err)
	}
	if err := remountProcSysNetWritable(); err != nil {
		t.Errorf("a second run: %v", err)
	}
}

// rewrite writes a sysctl's value back unchanged.
func rewrite(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
