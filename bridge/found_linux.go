package bridge

// Reading a link back from the kernel, its veth peer included wherever it
// is. A container's end of a veth lives in the container's namespace, which
// vxbridge holds no handle of; the kernel names it relative to ours by a
// namespace id (IFLA_LINK_NETNSID), and answers requests about it that
// carry that id (IFLA_TARGET_NETNSID, IFA_TARGET_NETNSID, Linux 4.20 and
// later) without entering it. Address dumps honour the target id only with
// strict checking on (NETLINK_GET_STRICT_CHK), so these requests go on a
// socket of their own.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/internal/netdev"
)

// SetAlias changes the alias of link name from `from` to `to`: a link made
// from one state file is taken over by another. A link carrying another
// alias than `from` is left alone with a *NotOwnedError; a missing link is
// success (there is nothing to take over).
func (m *Manager) SetAlias(name, from, to string) error {
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("set alias: %w", err)
	}
	if err := validateAlias(to); err != nil {
		return fmt.Errorf("set alias of %q: %w", name, err)
	}
	defer m.names.Lock(name)()
	link, found, err := m.nlh.Lookup(name)
	if err != nil || !found {
		return err
	}
	if link.Attrs().Alias != from {
		return fmt.Errorf("set alias of %q: %w", name, netdev.NotOwned(link))
	}
	return m.nlh.SetAlias(link, to)
}

// Inspect reads link name back: its kind, alias, master, MTU, addresses,
// a VXLAN device's VNI and a veth's peer. found is false when there is no
// such link.
func (m *Manager) Inspect(name string) (Found, bool, error) {
	info, found, err := m.Link(name)
	if err != nil || !found {
		return Found{}, found, err
	}
	link, found, err := m.nlh.Lookup(name)
	if err != nil || !found {
		return Found{}, found, err
	}
	f := Found{LinkInfo: info}
	if f.Addrs, err = m.globalAddrs(link); err != nil {
		return Found{}, false, err
	}
	switch l := link.(type) {
	case *netlink.Vxlan:
		f.VNI = uint32(l.VxlanId)
	case *netlink.Veth:
		if f.Peer, err = m.peer(link); err != nil {
			return Found{}, false, fmt.Errorf("peer of %q: %w", name, err)
		}
	}
	return f, true, nil
}

func (m *Manager) globalAddrs(link netlink.Link) ([]netip.Prefix, error) {
	addrs, err := m.nlh.Addrs(link)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && a.Scope == unix.RT_SCOPE_UNIVERSE {
			out = append(out, p)
		}
	}
	return out, nil
}

// peer reads the other end of veth link; nil when the kernel does not say
// which it is.
func (m *Manager) peer(link netlink.Link) (*Peer, error) {
	a := link.Attrs()
	if a.ParentIndex == 0 {
		return nil, nil
	}
	if a.NetNsID < 0 { // here
		l, found, err := m.nlh.LookupIndex(a.ParentIndex)
		if err != nil || !found {
			return nil, err
		}
		addrs, err := m.globalAddrs(l)
		if err != nil {
			return nil, err
		}
		return &Peer{Name: l.Attrs().Name, MAC: l.Attrs().HardwareAddr, Addrs: addrs}, nil
	}
	return m.peerElsewhere(a.NetNsID, a.ParentIndex)
}

// peerElsewhere reads link index of the namespace the Manager's knows as
// nsid.
func (m *Manager) peerElsewhere(nsid, index int) (*Peer, error) {
	sock, err := netdev.Socket(m.ns)
	if err != nil {
		return nil, err
	}
	defer sock.Socket.Close()
	if err := unix.SetsockoptInt(sock.Socket.GetFd(), unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1); err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: sock}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_TARGET_NETNSID, nl.Uint32Attr(uint32(nsid))))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return nil, fmt.Errorf("link %d of namespace id %d: %w", index, nsid, err)
	}
	if len(msgs) != 1 {
		return nil, fmt.Errorf("link %d of namespace id %d: %d answers", index, nsid, len(msgs))
	}
	l, err := netlink.LinkDeserialize(nil, msgs[0])
	if err != nil {
		return nil, err
	}
	p := &Peer{Name: l.Attrs().Name, MAC: l.Attrs().HardwareAddr, Elsewhere: true}
	p.Addrs, err = addrsElsewhere(sock, nsid, index)
	return p, err
}

// addrsElsewhere dumps the global addresses of link index in namespace id
// nsid, both families.
func addrsElsewhere(sock *nl.SocketHandle, nsid, index int) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		req := nl.NewNetlinkRequest(unix.RTM_GETADDR, unix.NLM_F_DUMP)
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: sock}
		msg := nl.NewIfAddrmsg(family)
		msg.Index = uint32(index) // strict checking filters on it
		req.AddData(msg)
		req.AddData(nl.NewRtAttr(unix.IFA_TARGET_NETNSID, nl.Uint32Attr(uint32(nsid))))
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWADDR)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("addresses of link %d of namespace id %d: %w", index, nsid, err)
		}
		for _, b := range msgs {
			if p, ok := parseAddrMsg(b, index); ok {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// parseAddrMsg reads an RTM_NEWADDR of link index with global scope.
func parseAddrMsg(b []byte, index int) (netip.Prefix, bool) {
	if len(b) < unix.SizeofIfAddrmsg {
		return netip.Prefix{}, false
	}
	msg := nl.DeserializeIfAddrmsg(b)
	if int(msg.Index) != index || msg.Scope != unix.RT_SCOPE_UNIVERSE {
		return netip.Prefix{}, false
	}
	attrs, err := nl.ParseRouteAttr(b[unix.SizeofIfAddrmsg:])
	if err != nil {
		return netip.Prefix{}, false
	}
	var addr []byte
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.IFA_LOCAL:
			addr = a.Value
		case unix.IFA_ADDRESS:
			if addr == nil {
				addr = a.Value
			}
		}
	}
	ip, ok := netip.AddrFromSlice(net.IP(addr))
	if !ok {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(ip.Unmap(), int(msg.Prefixlen)), true
}
