package names

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/namespace"
)

// embeddedDNS is where docker serves its embedded DNS in every container
// of a user-defined network.
var embeddedDNS = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 11), Port: 53}

// sandbox is a UDP socket made inside a container's network namespace
// (the socket stays there; the thread that made it went back), connected
// to docker's embedded DNS.
// sandbox asks docker's embedded DNS in one container's namespace. A
// question that fails is followed by a new socket: docker installs the NAT
// rule that leads 127.0.0.11:53 to its resolver only as it sets the sandbox
// up, and a socket whose first question came before that is held by its
// conntrack entry (refreshed by each retry) to the bare port, refused for
// good.
type sandbox struct {
	ns     netns.NsHandle
	c      *net.UDPConn
	failed bool
}

// OpenSandbox opens a socket to docker's embedded DNS in the network
// namespace at path (Join's SandboxKey), as this process's mounts see it.
func OpenSandbox(path string) (Sandbox, error) { return openSandbox(nil, path) }

// SandboxOpener opens sandboxes as OpenSandbox does, finding their paths
// in mount namespace mnt (nil: the process's own): docker's, held from
// start by a process that runs in a mount namespace of its own, such as a
// managed plugin, where docker's mounts of the sandboxes are not seen.
func SandboxOpener(mnt *namespace.MountNS) func(string) (Sandbox, error) {
	return func(path string) (Sandbox, error) { return openSandbox(mnt, path) }
}

// openSandbox opens the namespace file on a thread in mnt; the open handle
// is entered from any thread afterwards.
func openSandbox(mnt *namespace.MountNS, key string) (Sandbox, error) {
	var h netns.NsHandle
	err := mnt.Run(func() error {
		path, err := sandboxPath(key)
		if err != nil {
			return err
		}
		if h, err = netns.GetFromPath(path); err != nil {
			return fmt.Errorf("open sandbox %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	c, err := dialIn(h)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("socket in sandbox %s: %w", key, err)
	}
	return &sandbox{ns: h, c: c}, nil
}

func dialIn(h netns.NsHandle) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := namespace.Do(h, func() error {
		var err error
		c, err = net.DialUDP("udp4", nil, embeddedDNS)
		return err
	})
	return c, err
}

func (s *sandbox) Close() error {
	err := s.c.Close()
	s.ns.Close()
	return err
}

// redial replaces the socket after a failed question (see sandbox).
func (s *sandbox) redial() error {
	c, err := dialIn(s.ns)
	if err != nil {
		return err
	}
	s.c.Close()
	s.c, s.failed = c, false
	return nil
}

// sandboxPath finds the namespace docker mounted at key. Docker mounts it
// in its own mount namespace: where that is not vxbridge's (dockerd with
// private mounts), the same path is reached through dockerd's root,
// /proc/<pid>/root, of the dockerd in vxbridge's network namespace.
func sandboxPath(key string) (string, error) {
	if ok, err := namespace.IsNamespace(key); err == nil && ok {
		return key, nil
	}
	pid, err := dockerdHere()
	if err != nil {
		return "", fmt.Errorf("%w: %s is no network namespace here, and %w", ErrNoSandbox, key, err)
	}
	through := filepath.Join("/proc", strconv.Itoa(pid), "root", key)
	if ok, err := namespace.IsNamespace(through); err != nil || !ok {
		return "", fmt.Errorf("%w: %s, neither here nor in dockerd's (pid %d) mounts", ErrNoSandbox, key, pid)
	}
	return through, nil
}

// DockerdMountNS is the mount namespace file of the dockerd in the calling
// thread's network namespace: where that dockerd mounts its sandboxes.
func DockerdMountNS() (string, error) {
	pid, err := dockerdHere()
	if err != nil {
		return "", err
	}
	return filepath.Join("/proc", strconv.Itoa(pid), "ns", "mnt"), nil
}

// dockerdHere finds a dockerd process in the calling thread's network
// namespace.
func dockerdHere() (int, error) {
	self, err := nsInode("/proc/thread-self/ns/net")
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "dockerd" {
			continue
		}
		if ino, err := nsInode(filepath.Join("/proc", e.Name(), "ns", "net")); err == nil && ino == self {
			return pid, nil
		}
	}
	return 0, errors.New("no dockerd runs in this network namespace")
}

func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Ino, nil
}

func (s *sandbox) PTR(ctx context.Context, addr netip.Addr) (string, error) {
	rev, err := dns.ReverseAddr(addr.String())
	if err != nil {
		return "", err
	}
	r, err := s.exchange(ctx, rev, dns.TypePTR)
	if err != nil {
		return "", err
	}
	for _, rr := range r.Answer {
		if p, ok := rr.(*dns.PTR); ok {
			return p.Ptr, nil
		}
	}
	return "", fmt.Errorf("no PTR record for %s (rcode %s)", addr, dns.RcodeToString[r.Rcode])
}

func (s *sandbox) Resolves(ctx context.Context, name string, addr netip.Addr) bool {
	qtype := dns.TypeA
	if addr.Is6() {
		qtype = dns.TypeAAAA
	}
	r, err := s.exchange(ctx, dns.Fqdn(name), qtype)
	if err != nil {
		return false
	}
	for _, rr := range r.Answer {
		var got net.IP
		switch v := rr.(type) {
		case *dns.A:
			got = v.A
		case *dns.AAAA:
			got = v.AAAA
		}
		if a, ok := netip.AddrFromSlice(got); ok && a.Unmap() == addr.Unmap() {
			return true
		}
	}
	return false
}

// exchange sends one query and waits for its answer until ctx ends;
// stray answers (of an earlier query that timed out) are skipped.
func (s *sandbox) exchange(ctx context.Context, name string, qtype uint16) (r *dns.Msg, retErr error) {
	if s.failed {
		if err := s.redial(); err != nil {
			return nil, err
		}
	}
	defer func() { s.failed = retErr != nil }()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	out, err := q.Pack()
	if err != nil {
		return nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(queryWait)
	}
	if err := s.c.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if _, err := s.c.Write(out); err != nil {
		return nil, err
	}
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, err := s.c.Read(buf)
		if err != nil {
			return nil, err
		}
		r = new(dns.Msg)
		if r.Unpack(buf[:n]) == nil && r.Id == q.Id && r.Response {
			return r, nil
		}
	}
}
