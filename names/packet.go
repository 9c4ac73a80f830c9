package names

import (
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// packetConn is a UDP socket that tells, for each datagram, the address it
// was sent to, and replies from that address. The server listens on the
// wildcard address: the firewall redirects each network's queries to its
// gateway address, which the conntrack lookup and the reply's source must
// name.
type packetConn struct {
	c    *net.UDPConn
	v6   bool
	port uint16
}

func listenPacket(a netip.AddrPort) (*packetConn, error) {
	network := "udp4"
	if a.Addr().Is6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(a))
	if err != nil {
		return nil, err
	}
	pc := &packetConn{c: c, v6: a.Addr().Is6(), port: uint16(c.LocalAddr().(*net.UDPAddr).Port)}
	if pc.v6 {
		err = ipv6.NewPacketConn(c).SetControlMessage(ipv6.FlagDst, true)
	} else {
		err = ipv4.NewPacketConn(c).SetControlMessage(ipv4.FlagDst, true)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("ask for destination addresses: %w", err)
	}
	return pc, nil
}

func (pc *packetConn) read(buf []byte) (n int, local, remote netip.AddrPort, err error) {
	oob := make([]byte, 128)
	n, oobn, _, remote, err := pc.c.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		return 0, local, remote, err
	}
	var dst net.IP
	if pc.v6 {
		var cm ipv6.ControlMessage
		if cm.Parse(oob[:oobn]) == nil {
			dst = cm.Dst
		}
	} else {
		var cm ipv4.ControlMessage
		if cm.Parse(oob[:oobn]) == nil {
			dst = cm.Dst
		}
	}
	a, _ := netip.AddrFromSlice(dst)
	return n, netip.AddrPortFrom(a.Unmap(), pc.port), netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()), nil
}

// write sends b to remote from local's address.
func (pc *packetConn) write(b []byte, local, remote netip.AddrPort) error {
	var oob []byte
	if pc.v6 {
		oob = (&ipv6.ControlMessage{Src: local.Addr().AsSlice()}).Marshal()
	} else {
		oob = (&ipv4.ControlMessage{Src: local.Addr().AsSlice()}).Marshal()
	}
	_, _, err := pc.c.WriteMsgUDPAddrPort(b, oob, remote)
	return err
}

func (pc *packetConn) localAddr() netip.AddrPort { return pc.c.LocalAddr().(*net.UDPAddr).AddrPort() }

// Close closes the socket.
func (pc *packetConn) Close() error { return pc.c.Close() }
