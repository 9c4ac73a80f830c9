package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

const procSysNet = "/proc/sys/net"

// remountProcSysNetWritable makes /proc/sys/net writable inside a managed
// plugin, where docker's container spec marks all of /proc/sys read-only
// (config.json cannot change that, and runc refuses mounts inside /proc):
// the bridge code sets forwarding, per-bridge IPv6 and neighbour-table
// sysctls, all under net. It bind-mounts /proc/sys/net on itself and
// remounts that bind read-write; the rest of /proc/sys stays read-only. The
// plugin has its own mount namespace, so only its view changes. This is
// what CAP_SYS_ADMIN is for in config.json. Run with --writable-proc-sys.
func remountProcSysNetWritable() error {
	var st unix.Statfs_t
	if err := unix.Statfs(procSysNet, &st); err != nil {
		return fmt.Errorf("--writable-proc-sys: statfs %s: %w", procSysNet, err)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		return nil
	}
	if err := unix.Mount(procSysNet, procSysNet, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("--writable-proc-sys: bind %s on itself (needs CAP_SYS_ADMIN): %w", procSysNet, err)
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := unix.Mount("", procSysNet, "", flags, ""); err != nil {
		return fmt.Errorf("--writable-proc-sys: remount %s read-write (needs CAP_SYS_ADMIN): %w", procSysNet, err)
	}
	return nil
}
