package namespace

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// MountNS is an open mount namespace other than the process's own: the one
// a Dir's files live in when the process runs in a mount namespace that
// dies with it (a managed plugin's container), so that the namespaces'
// bind mounts outlive the process. A thread that works there joins it for
// good, and Go ends that thread afterwards.
type MountNS struct {
	fd   int
	path string
}

// OpenMountNS opens the mount namespace at path (such as /proc/1/ns/mnt,
// the host's, for a process that sees the host's processes). When that is
// the calling process's own mount namespace it returns nil, and no error:
// a nil *MountNS is the process's own, reached without a thread of its own.
func OpenMountNS(path string) (*MountNS, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		return nil, fmt.Errorf("open mount namespace %s: %w (the kernel lets a process open another's namespace "+
			"files only with ptrace access to it, CAP_SYS_PTRACE; a managed plugin must also see the host's processes, pidHost)", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open mount namespace %s: %w", path, err)
	}
	own, err := checkMountNS(fd)
	if err != nil || own {
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("open mount namespace %s: %w", path, err)
		}
		return nil, nil
	}
	return &MountNS{fd: fd, path: path}, nil
}

// checkMountNS checks that fd is a mount namespace and reports whether it
// is the calling thread's (the process's: no thread that joined another
// mount namespace ever runs other goroutines).
func checkMountNS(fd int) (own bool, err error) {
	isNS, isMnt, err := nsKind(fd, unix.CLONE_NEWNS)
	if err != nil {
		return false, err
	}
	if !isNS || !isMnt {
		return false, errors.New("not a mount namespace file")
	}
	var there, here unix.Stat_t
	if err := unix.Fstat(fd, &there); err != nil {
		return false, fmt.Errorf("fstat: %w", err)
	}
	if err := unix.Stat("/proc/thread-self/ns/mnt", &here); err != nil {
		return false, fmt.Errorf("stat own mount namespace: %w", err)
	}
	return there.Dev == here.Dev && there.Ino == here.Ino, nil
}

// Close closes the namespace's handle; nil is a no-op. Nothing may use m
// afterwards.
func (m *MountNS) Close() {
	if m != nil {
		unix.Close(m.fd)
	}
}

// Run runs fn where paths resolve in m: on the calling goroutine when m is
// nil (the process's own), else on a fresh locked thread that joined m,
// which Go ends afterwards. File descriptors fn opens stay valid on every
// thread: a network namespace's file opened there can be entered from any.
func (m *MountNS) Run(fn func() error) error {
	if m == nil {
		return fn()
	}
	return onThread(m, func() error { return nil }, fn)
}

// join moves the calling thread, locked, into m for good.
func (m *MountNS) join() error {
	// Go's threads share one root and working directory (CLONE_FS), and
	// setns refuses a mount namespace to a thread that shares them.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("enter mount namespace %s: unshare(CLONE_FS): %w", m.path, err)
	}
	if err := unix.Setns(m.fd, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("enter mount namespace %s: %w", m.path, err)
	}
	return nil
}

// onThread runs fn on a fresh goroutine locked to its OS thread, after the
// thread joined mount namespace mnt (nil: it stays in the process's own)
// and enter moved it into another network namespace; then it moves the
// thread back to its network namespace. A failed enter must leave the
// thread where it was (setns and unshare do). Go ends the thread with the
// goroutine, instead of reusing it, when it joined mnt or could not move
// back. The main thread, which Go never ends, is parked for good instead:
// still moved back to its network namespace first, so a parked thread keeps
// no network namespace alive unless that move failed.
func onThread(mnt *MountNS, enter, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		clean, err := switched(mnt, enter, fn)
		if clean {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// switched is onThread's work on the locked thread; clean reports whether
// the thread is as it was, fit to run other goroutines.
func switched(mnt *MountNS, enter, fn func() error) (clean bool, err error) {
	saved, err := netns.Get() // before joining mnt, whose /proc may count pids otherwise
	if err != nil {
		return true, fmt.Errorf("get current network namespace: %w", err)
	}
	defer saved.Close()
	if mnt != nil {
		if err := mnt.join(); err != nil {
			return false, err
		}
	}
	if err := enter(); err != nil {
		return mnt == nil, err
	}
	fnErr := fn()
	if err := netns.Set(saved); err != nil {
		return false, errors.Join(fnErr, fmt.Errorf("switch thread back to its network namespace (thread discarded): %w", err))
	}
	return mnt == nil, fnErr
}
