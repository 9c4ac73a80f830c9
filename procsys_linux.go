package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// remountProcSysWritable undoes docker's read-only /proc/sys inside a
// managed plugin (its container spec marks /proc/sys read-only; config.json
// cannot change that), so the bridge code can set forwarding and per-bridge
// IPv6 sysctls. The plugin has its own mount namespace, so only its view
// changes; it needs CAP_SYS_ADMIN. Run with --writable-proc-sys.
func remountProcSysWritable() error {
	var st unix.Statfs_t
	if err := unix.Statfs("/proc/sys", &st); err != nil {
		return fmt.Errorf("--writable-proc-sys: statfs /proc/sys: %w", err)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		return nil
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := unix.Mount("", "/proc/sys", "", flags, ""); err != nil {
		return fmt.Errorf("--writable-proc-sys: remount /proc/sys read-write (needs CAP_SYS_ADMIN): %w", err)
	}
	return nil
}
