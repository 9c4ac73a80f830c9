package server

// One vxbridge per socket and per network namespace.
//
// The state file's lock only keeps two instances off one state directory; a
// second vxbridge started with another --state-dir got past it, reconciled
// the kernel against its own records, then removed the first one's socket
// and served in its place. Claim, called first thing at start-up, before the
// state or the kernel is touched, makes it fail fast instead, naming the
// first:
//   - an flock on <socket>.lock, which holds the pid of its holder: two
//     instances on one socket path, whatever their state directories;
//   - an abstract unix socket (optional). Abstract sockets belong to a
//     network namespace and vanish with their process: a second instance
//     in the same namespace cannot bind it, whatever its socket path, state
//     directory or mount namespace (a managed plugin's is private). It
//     answers each connection with the holder's pid and socket.
//
// And no instance removes a socket file a live process serves: ListenUnix
// connects first and removes only a socket nobody answers on.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrAnotherInstance classifies a start refused because another vxbridge
// serves the same socket or network namespace.
var ErrAnotherInstance = errors.New("another vxbridge is running")

// NamespaceLock is the abstract socket name serve claims in its network
// namespace.
const NamespaceLock = "vxbridge.instance"

// ClaimOptions configure Claim.
type ClaimOptions struct {
	Socket string // the socket vxbridge will serve on
	// Namespace, when set, is the abstract socket name claimed in the
	// network namespace ("" skips it: tests that share one namespace).
	Namespace string
	// Wait bounds the wait for a lock held by an instance that is exiting
	// (default 2 s).
	Wait time.Duration
}

// Instance is this process's claim; hold it until exit.
type Instance struct {
	socket string
	lock   *os.File
	ns     net.Listener
}

// Claim makes this process the one vxbridge of its socket (and namespace),
// or fails wrapping ErrAnotherInstance with a message naming the other.
func Claim(o ClaimOptions) (_ *Instance, retErr error) {
	if o.Wait <= 0 {
		o.Wait = 2 * time.Second
	}
	if err := os.MkdirAll(filepath.Dir(o.Socket), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	in := &Instance{socket: o.Socket}
	defer func() {
		if retErr != nil {
			in.Release()
		}
	}()
	var err error
	if in.lock, err = lockSocket(o.Socket, o.Wait); err != nil {
		return nil, err
	}
	if err := refuseServed(o.Socket); err != nil {
		return nil, err
	}
	if o.Namespace != "" {
		if in.ns, err = claimNamespace(o.Namespace, o.Socket, o.Wait); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// Release gives the claim up (exit does too).
func (in *Instance) Release() {
	if in.ns != nil {
		in.ns.Close()
	}
	if in.lock != nil {
		in.lock.Close() // drops the flock; the file stays, as removing it would race the next holder
	}
}

// lockSocket takes the flock of socket+".lock" and writes this pid in it.
func lockSocket(socket string, wait time.Duration) (*os.File, error) {
	path := socket + ".lock"
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open instance lock %s: %w", path, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: pid %s holds %s (it serves %s); stop it first",
				ErrAnotherInstance, strings.TrimSpace(string(holder)), path, socket)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// refuseServed fails when a live process answers on the socket path.
func refuseServed(socket string) error {
	p, live := peer(socket, false)
	if !live {
		return nil
	}
	return fmt.Errorf("%w: %s serves %s; stop it first", ErrAnotherInstance, p, socket)
}

// peer connects to a unix socket (an abstract one when it starts with @)
// and says who listens on it, and whether anything answered. The pid is the
// kernel's (SO_PEERCRED), in this process's pid namespace; with hello, the
// listener's own line "pid socket" is read too.
func peer(addr string, hello bool) (who string, live bool) {
	c, err := net.DialTimeout("unix", addr, time.Second)
	if err != nil {
		return "", false
	}
	defer c.Close()
	who = "pid unknown"
	if raw, err := c.(*net.UnixConn).SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil && cred.Pid > 0 {
				who = fmt.Sprintf("pid %d", cred.Pid)
			}
		})
	}
	if !hello {
		return who, true
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if pid, sock, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
		if who == "pid unknown" { // another pid namespace: a managed plugin's, say
			who = fmt.Sprintf("a process of another pid namespace (pid %s there)", pid)
		}
		who += " serving " + sock
	}
	return who, true
}

// claimNamespace binds the abstract socket name in this network namespace
// and answers each connection with "pid socket".
func claimNamespace(name, socket string, wait time.Duration) (net.Listener, error) {
	deadline := time.Now().Add(wait)
	l, err := net.Listen("unix", "@"+name)
	for errors.Is(err, syscall.EADDRINUSE) && time.Now().Before(deadline) { // an instance that is exiting
		time.Sleep(50 * time.Millisecond)
		l, err = net.Listen("unix", "@"+name)
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		who, _ := peer("@"+name, true)
		return nil, fmt.Errorf("%w in this network namespace: %s; stop it first", ErrAnotherInstance, who)
	}
	if err != nil {
		return nil, fmt.Errorf("claim this network namespace (abstract socket @%s): %w", name, err)
	}
	hello := fmt.Sprintf("%d %s\n", os.Getpid(), socket)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return // closed
			}
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte(hello))
			c.Close()
		}
	}()
	return l, nil
}
