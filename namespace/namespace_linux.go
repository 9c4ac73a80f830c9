package namespace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/internal/netdev"
)

// maxStacked bounds the mounts Delete takes off one file.
const maxStacked = 16

// Ensure makes namespace name exist (creating Path with mode 0755 if
// missing) and returns an open handle to it (caller closes it). Idempotent.
// Crash-safe: a file left without a namespace mounted on it (a crash
// between creating the file and the bind mount) is treated as missing and
// the namespace is created on it again; created reports whether this call
// made the namespace. Dir/<name> must be a regular file or missing: a
// symlink, directory or other kind is an error. On an error the file may
// stay, usually without a namespace on it (with one only if the thread could
// not switch back after the mount); a later Ensure reuses either. Concurrent
// Ensures of the same name must be serialised by the caller.
func (d Dir) Ensure(name string) (h netns.NsHandle, created bool, err error) {
	path, err := d.path(name)
	if err != nil {
		return netns.None(), false, err
	}
	err = d.Mounts.Run(func() error {
		if err := os.MkdirAll(d.Path, 0o755); err != nil {
			return fmt.Errorf("create namespace directory %s: %w", d.Path, err)
		}
		return nil
	})
	if err != nil {
		return netns.None(), false, err
	}
	h, found, err := d.Open(name)
	if err != nil || found {
		return h, false, err
	}
	if err := d.Mounts.Run(func() error { return createFile(path) }); err != nil {
		return netns.None(), false, err
	}
	if err := mountNew(d.Mounts, path); err != nil {
		return netns.None(), false, err
	}
	h, found, err = d.Open(name)
	if err != nil {
		return netns.None(), false, err
	}
	if !found {
		return netns.None(), false, fmt.Errorf("create namespace %s: bind mount made, but no namespace is visible on the file", path)
	}
	return h, true, nil
}

// createFile makes the plain file a namespace is mounted on, or checks that
// the existing one is a regular file. It does not follow a symlink.
func createFile(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o444)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return fmt.Errorf("create namespace %s: create file: is a symlink", path)
		}
		return fmt.Errorf("create namespace %s: create file: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("create namespace %s: stat file: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("create namespace %s: not a regular file (mode %#o)", path, st.Mode)
	}
	return nil
}

// mountNew makes a network namespace on a locked thread and bind-mounts it
// onto path, which must exist, in mount namespace mnt (nil: the process's
// own). The thread switches back to its network namespace afterwards; if it
// cannot, Go discards it with its goroutine.
func mountNew(mnt *MountNS, path string) error {
	err := onThread(mnt,
		func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			}
			return nil
		},
		func() error {
			if err := unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind mount /proc/thread-self/ns/net: %w", err)
			}
			return nil
		})
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", path, err)
	}
	return nil
}

// Open returns a handle to an existing namespace; found is false (and err
// nil) when there is no file or nothing is mounted on it. A namespace file
// of another kind (a mount namespace, say) mounted there is an error, as is
// a symlink.
func (d Dir) Open(name string) (h netns.NsHandle, found bool, err error) {
	path, err := d.path(name)
	if err != nil {
		return netns.None(), false, err
	}
	var fd int
	err = d.Mounts.Run(func() (err error) {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		return err
	})
	if errors.Is(err, unix.ENOENT) {
		return netns.None(), false, nil
	}
	if errors.Is(err, unix.ELOOP) {
		return netns.None(), false, fmt.Errorf("open namespace %s: is a symlink", path)
	}
	if err != nil {
		return netns.None(), false, fmt.Errorf("open namespace %s: %w", path, err)
	}
	isNS, isNet, err := nsKind(fd, unix.CLONE_NEWNET)
	switch {
	case err != nil:
		unix.Close(fd)
		return netns.None(), false, fmt.Errorf("open namespace %s: %w", path, err)
	case !isNS:
		unix.Close(fd)
		return netns.None(), false, nil
	case !isNet:
		unix.Close(fd)
		return netns.None(), false, fmt.Errorf("open namespace %s: a namespace file, but not of a network namespace", path)
	}
	return netns.NsHandle(fd), true, nil
}

// nsKind reports whether fd is a namespace file (nsfs) and whether that
// namespace is of type want (unix.CLONE_NEWNET, unix.CLONE_NEWNS). A kernel
// without NS_GET_NSTYPE (before 4.11) is taken at its nsfs word.
func nsKind(fd, want int) (isNS, isWant bool, err error) {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return false, false, fmt.Errorf("statfs: %w", err)
	}
	if sfs.Type != unix.NSFS_MAGIC {
		return false, false, nil
	}
	t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if errors.Is(err, unix.ENOTTY) {
		return true, true, nil
	}
	if err != nil {
		return true, false, fmt.Errorf("ioctl NS_GET_NSTYPE: %w", err)
	}
	return true, t == want, nil
}

// Delete unmounts (MNT_DETACH) and removes Dir/<name>; a missing file or a
// file with nothing mounted is success (the file is removed). The namespace
// itself goes away with its last user: handles still open keep it, and the
// links in it, alive. Mounts stacked on the file are all taken off. A
// symlink is removed, never followed. On an error the file may stay,
// mounted or not; Delete can be called again.
func (d Dir) Delete(name string) error {
	path, err := d.path(name)
	if err != nil {
		return err
	}
	return d.Mounts.Run(func() error { return unmountAndRemove(path) })
}

// unmountAndRemove is Delete on path, in the calling thread's mount
// namespace.
func unmountAndRemove(path string) error {
	for i := 0; ; i++ {
		err := unix.Unmount(path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break // nothing (more) mounted, or no file
		}
		if err != nil {
			return fmt.Errorf("delete namespace %s: unmount: %w", path, err)
		}
		if i == maxStacked {
			return fmt.Errorf("delete namespace %s: still mounted after %d unmounts", path, maxStacked+1)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete namespace %s: %w", path, err)
	}
	return nil
}

// sysctl is one /proc/sys value Prepare sets.
type sysctl struct {
	path, value string
}

// ipv6Sysctls keep the links made in or moved into the namespace without
// IPv6 addresses of their own (addr_gen_mode 1, "none": no link-local
// address, so no router solicitation or MLD report of theirs goes out into
// the network): they carry only bridged traffic. IPv6 itself stays on: a
// VXLAN device answers neighbour solicitations from its IPv6 neighbour
// table, which a link with disable_ipv6 set cannot hold.
var ipv6Sysctls = []sysctl{
	{"/proc/sys/net/ipv6/conf/default/addr_gen_mode", "1"},
}

// bridgeSysctls keep bridged frames out of iptables, ip6tables and
// arptables. The files exist only while br_netfilter is loaded; its
// per-namespace default is 1.
var bridgeSysctls = []sysctl{
	{"/proc/sys/net/bridge/bridge-nf-call-iptables", "0"},
	{"/proc/sys/net/bridge/bridge-nf-call-ip6tables", "0"},
	{"/proc/sys/net/bridge/bridge-nf-call-arptables", "0"},
}

// Prepare configures a fresh or existing namespace for a vxbridge network,
// inside it: net.ipv6.conf.default.addr_gen_mode=1 (links there carry only
// bridged traffic and get no IPv6 address of their own; see ipv6Sysctls)
// when /proc/sys/net/ipv6 exists; net.bridge.bridge-nf-call-iptables=0, bridge-nf-call-ip6tables=0
// and bridge-nf-call-arptables=0 when those files exist (only while the
// br_netfilter module is loaded; its per-namespace default is 1 and dockerd
// loads it, so a reconciler calls Prepare again); then loopback up.
// Idempotent and cheap: each value is read first and written only when it
// differs, lo is set up only when down. It stops at the first error, which
// names the sysctl or step; what was set before stays set.
func Prepare(h netns.NsHandle) error {
	return Do(h, func() error {
		// /proc/sys/net resolves against this thread's namespace: h.
		if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
			for _, s := range ipv6Sysctls {
				if err := setSysctl(s, false); err != nil {
					return fmt.Errorf("prepare namespace: %w", err)
				}
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("prepare namespace: %w", err)
		}
		for _, s := range bridgeSysctls {
			if err := setSysctl(s, true); err != nil {
				return fmt.Errorf("prepare namespace: %w", err)
			}
		}
		if err := loopbackUp(); err != nil {
			return fmt.Errorf("prepare namespace: %w", err)
		}
		return nil
	})
}

// setSysctl writes s.value unless the file already holds it; a missing file
// is success when missingOK.
func setSysctl(s sysctl, missingOK bool) error {
	cur, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) && missingOK {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", s.path, err)
	}
	if strings.TrimSpace(string(cur)) == s.value {
		return nil
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("write %s: %w", s.path, err)
	}
	_, err = f.WriteString(s.value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s=%s: %w", s.path, s.value, err)
	}
	return nil
}

// loopbackUp sets lo up in the calling thread's namespace unless it is up.
func loopbackUp() error {
	nlh, err := netdev.OpenHandle(netns.None()) // a socket in this thread's namespace
	if err != nil {
		return err
	}
	defer nlh.Close()
	lo, err := nlh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	return netdev.NewHandle(nlh).SetUp(lo)
}

// Do runs fn on an OS thread switched into namespace h and switches back (a
// thread that cannot be switched back is not returned to the Go scheduler:
// runtime.LockOSThread without Unlock, so it dies with its goroutine). fn
// runs on a goroutine of its own while the caller waits; goroutines fn
// starts run elsewhere, in the process's namespace. When the switch into h
// fails, fn does not run. The error is fn's, joined with a failure to
// switch back. Go cannot end the process's main thread: if the discarded
// thread is that one, it is parked for good, still in h, keeping h alive,
// and /proc/<pid>/ns/net (which shows the main thread) then names h.
func Do(h netns.NsHandle, fn func() error) error {
	return onThread(nil, func() error {
		if err := netns.Set(h); err != nil {
			return fmt.Errorf("enter network namespace %v: %w", h, err)
		}
		return nil
	}, fn)
}

// Mounted reports whether namespace name is mounted on its file: IsNamespace
// of Dir/<name>, in the Dir's mount namespace.
func (d Dir) Mounted(name string) (ok bool, err error) {
	path, err := d.path(name)
	if err != nil {
		return false, err
	}
	err = d.Mounts.Run(func() (err error) {
		ok, err = IsNamespace(path)
		return err
	})
	return ok, err
}

// IsNamespace reports whether path is a mounted network namespace file
// (statfs magic NSFS_MAGIC, and NS_GET_NSTYPE says network where the kernel
// has it). A /proc/<pid>/ns/net link counts; a missing path is false, not
// an error.
func IsNamespace(path string) (bool, error) {
	var sfs unix.Statfs_t
	err := unix.Statfs(path, &sfs)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	if sfs.Type != unix.NSFS_MAGIC {
		return false, nil
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	_, isNet, err := nsKind(fd, unix.CLONE_NEWNET)
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return isNet, nil
}
