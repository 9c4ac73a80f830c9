package netdev

import (
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RequestTimeout bounds every netlink request vxbridge makes: sending it
// and waiting for each part of the kernel's answer. A request waits for
// RTNL, which any other process may hold; without a bound a stuck one
// would hold the driver's lock, and every docker call behind it, forever
// (handles made with NewHandleAt have no timeout at all; the netlink
// package's own per-request sockets wait 60 s, twice docker's patience
// with a plugin call). A request that times out fails with EAGAIN, which
// Timeout explains.
const RequestTimeout = 10 * time.Second

// UseRequestTimeout gives the netlink package's per-request sockets (the
// zero Handle, the package-level calls) RequestTimeout. Call it once, at
// start-up, before any request.
func UseRequestTimeout() error {
	return netlink.SetSocketTimeout(RequestTimeout)
}

// OpenHandle opens a netlink handle whose sockets time out after
// RequestTimeout: in namespace ns with a socket of every family the
// netlink package knows (a request of a family the handle lacks would go
// out on a socket of the calling thread's namespace instead), or, for
// netns.None(), a NETLINK_ROUTE socket in the calling thread's namespace.
func OpenHandle(ns netns.NsHandle) (*netlink.Handle, error) {
	var nlh *netlink.Handle
	var err error
	if ns == netns.None() {
		nlh, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		nlh, err = netlink.NewHandleAt(ns)
	}
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := nlh.SetSocketTimeout(RequestTimeout); err != nil {
		nlh.Close()
		return nil, fmt.Errorf("netlink socket timeout: %w", err)
	}
	return nlh, nil
}

// setTimeouts gives a socket of its own RequestTimeout both ways.
func setTimeouts(s *nl.NetlinkSocket) error {
	tv := unix.NsecToTimeval(RequestTimeout.Nanoseconds())
	if err := s.SetSendTimeout(&tv); err != nil {
		return fmt.Errorf("netlink socket timeout: %w", err)
	}
	if err := s.SetReceiveTimeout(&tv); err != nil {
		return fmt.Errorf("netlink socket timeout: %w", err)
	}
	return nil
}
