package bridge

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// WatchBridges calls fn with the name of every bridge that appears in the
// Manager's namespace until ctx ends. vxbridge uses it to notice docker
// creating a network: dockerd then inserts its own FORWARD rules above
// vxbridge's jump, which must be put back in place promptly.
//
// Every link change of the host arrives here (each endpoint's veth makes
// several), so each event is only scanned for its kind and name, not
// decoded into a link (that decoding was 9% of the plugin's CPU under
// load). When the kernel dropped events because the socket's buffer
// overflowed (ENOBUFS, a burst of link changes), fn gets "" (a bridge may
// have appeared) and the watch goes on.
func (m *Manager) WatchBridges(ctx context.Context, fn func(name string)) error {
	var s *nl.NetlinkSocket
	var err error
	if m.hasNS {
		s, err = nl.SubscribeAt(m.ns, netns.None(), unix.NETLINK_ROUTE, unix.RTNLGRP_LINK)
	} else {
		s, err = nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_LINK)
	}
	if err != nil {
		return fmt.Errorf("subscribe to link events: %w", err)
	}
	stop := context.AfterFunc(ctx, s.Close)
	defer stop()
	for {
		msgs, from, err := s.Receive()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, unix.ENOBUFS):
			m.log.Warn("link watch: events lost (socket buffer overflow); checking as if a bridge appeared")
			fn("")
			continue
		case errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN):
			continue
		case err != nil:
			s.Close()
			return fmt.Errorf("link events: %w", err)
		case from.Pid != nl.PidKernel:
			continue
		}
		for _, msg := range msgs {
			if name, ok := newBridge(msg); ok {
				fn(name)
			}
		}
	}
}

// newBridge reports whether msg announces a bridge (RTM_NEWLINK with
// IFLA_INFO_KIND "bridge"), and its name. Pure, and safe on any input: it
// walks only the attributes it needs, bounds-checked (the netlink package's
// attribute parser panics on some malformed input).
func newBridge(msg syscall.NetlinkMessage) (string, bool) {
	if msg.Header.Type != unix.RTM_NEWLINK || len(msg.Data) < unix.SizeofIfInfomsg {
		return "", false
	}
	var name string
	var bridge bool
	walkAttrs(msg.Data[unix.SizeofIfInfomsg:], func(typ uint16, val []byte) {
		switch typ {
		case unix.IFLA_IFNAME:
			name = cString(val)
		case unix.IFLA_LINKINFO:
			walkAttrs(val, func(typ uint16, val []byte) {
				if typ == unix.IFLA_INFO_KIND && cString(val) == "bridge" {
					bridge = true
				}
			})
		}
	})
	if !bridge || name == "" {
		return "", false
	}
	return name, true
}

// walkAttrs calls fn with the type (flags masked off) and value of each
// netlink attribute in b, stopping at the first malformed one.
func walkAttrs(b []byte, fn func(typ uint16, val []byte)) {
	for len(b) >= unix.SizeofRtAttr {
		l := int(nl.NativeEndian().Uint16(b[0:2]))
		typ := nl.NativeEndian().Uint16(b[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < unix.SizeofRtAttr || l > len(b) {
			return
		}
		fn(typ, b[unix.SizeofRtAttr:l])
		next := (l + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1)
		if next >= len(b) {
			return
		}
		b = b[next:]
	}
}

// cString is a netlink string attribute without its terminating NUL.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
