package portproxy

import (
	"errors"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// sctpHold is a bare listening SCTP socket: it reserves the port, nothing
// more (Go has no SCTP, and loopback SCTP to a container is rare enough).
type sctpHold struct {
	fd   int
	to   netip.AddrPort
	once sync.Once
}

// noSCTP is a reservation on a kernel without SCTP: no process can take the
// port either.
type noSCTP struct{ to netip.AddrPort }

func (n noSCTP) target() netip.AddrPort { return n.to }
func (noSCTP) close()                   {}

func (mgr *Manager) holdSCTP(m Mapping) (holder, error) {
	family := unix.AF_INET6
	if m.Host.Addr().Is4() {
		family = unix.AF_INET
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ESOCKTNOSUPPORT) {
		mgr.log.Debug("no SCTP in this kernel: SCTP port not reserved", "port", m.Host)
		return noSCTP{m.Target}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := bindListen(fd, m.Host); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &sctpHold{fd: fd, to: m.Target}, nil
}

func bindListen(fd int, host netip.AddrPort) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return err
	}
	var sa unix.Sockaddr
	if host.Addr().Is4() {
		sa = &unix.SockaddrInet4{Port: int(host.Port()), Addr: host.Addr().As4()}
	} else {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return err
		}
		sa = &unix.SockaddrInet6{Port: int(host.Port()), Addr: host.Addr().As16()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return err
	}
	return unix.Listen(fd, 1)
}

func (s *sctpHold) target() netip.AddrPort { return s.to }
func (s *sctpHold) close()                 { s.once.Do(func() { unix.Close(s.fd) }) }
