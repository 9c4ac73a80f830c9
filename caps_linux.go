package main

import (
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dropCapability removes capability c from every thread of the process, in
// the effective, permitted, inheritable and bounding sets, so that neither
// the process nor a program it runs (iptables) can have it again. Dropping
// from the bounding set needs CAP_SETPCAP (docker gives it to plugins).
// Linux keeps capabilities per thread: syscall.AllThreadsSyscall applies
// the change to all of Go's threads, and threads made later copy it. It
// exists only in binaries built without cgo (the plugin's is static); with
// cgo it fails with ENOTSUP and nothing changes.
func dropCapability(c uintptr) error {
	hdr := &unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := new([2]unix.CapUserData)
	if err := unix.Capget(hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	word, bit := c/32, uint32(1)<<(c%32)
	data[word].Effective &^= bit
	data[word].Permitted &^= bit
	data[word].Inheritable &^= bit
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0); errno != 0 {
		return fmt.Errorf("drop from the bounding set: %w", errno)
	}
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	runtime.KeepAlive(hdr)
	runtime.KeepAlive(data)
	if errno != 0 {
		return fmt.Errorf("capset: %w", errno)
	}
	return nil
}
