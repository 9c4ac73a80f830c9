package bridge

// Requests the netlink package has no call for, each doing in one round
// trip what would take it several (an endpoint's veth used to cost eight
// requests under RTNL; now two):
//
//   - createVeth: the pair created up, in netdev.BuildGroup and already
//     enslaved (IFLA_MASTER at creation; the package enslaves in a second
//     request and looks the new link up in between);
//   - finishPort: bridge-port flags, alias and leaving BuildGroup in one
//     RTM_NEWLINK on the existing link (the bridge applies the port flags as
//     slave data before the rest);
//   - retireByName: the move into RetireGroup addressed by name, with no
//     look-up first.

import (
	"errors"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/internal/netdev"
)

// request starts a netlink request on the Manager's own socket; a Manager
// from New has none and the request opens a socket of its own in the
// calling thread's namespace.
func (m *Manager) request(typ, flags int) *nl.NetlinkRequest {
	return netdev.Request(m.raw, typ, flags)
}

// createVeth creates cfg's pair with the host end up, in BuildGroup and
// enslaved to the bridge of index master, and the peer down with cfg's MAC,
// in namespace cfg.PeerNS if set.
// Both ends get MTU cfg.MTU (if set) and no transmit queue, as docker's
// bridge driver does.
func (m *Manager) createVeth(cfg VethConfig, master int) error {
	req := m.request(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Flags, msg.Change = unix.IFF_UP, unix.IFF_UP
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(cfg.HostName)))
	if cfg.MTU > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(cfg.MTU))))
	}
	req.AddData(nl.NewRtAttr(unix.IFLA_TXQLEN, nl.Uint32Attr(0)))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(netdev.BuildGroup)))
	req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(master))))
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("veth"))
	peer := info.AddRtAttr(nl.IFLA_INFO_DATA, nil).AddRtAttr(nl.VETH_INFO_PEER, nil)
	nl.NewIfInfomsgChild(peer, unix.AF_UNSPEC)
	peer.AddRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(cfg.PeerName))
	peer.AddRtAttr(unix.IFLA_TXQLEN, nl.Uint32Attr(0))
	if cfg.MTU > 0 {
		peer.AddRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(cfg.MTU)))
	}
	if cfg.MAC != nil {
		peer.AddRtAttr(unix.IFLA_ADDRESS, []byte(cfg.MAC))
	}
	if cfg.PeerNS != 0 {
		peer.AddRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(cfg.PeerNS)))
	}
	if cfg.PeerBuilding {
		peer.AddRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(netdev.BuildGroup))
	}
	req.AddData(info)
	return netdev.Exec(req)
}

// portSettings are what finishPort converges on a bridge port.
type portSettings struct {
	isolated, hairpin bool
	alias             string // set when not ""
	built             bool   // leave BuildGroup for group 0
}

// finishPort applies s to the bridge port called name in one request. The
// port flags are set unconditionally: reading them would dump every port of
// every bridge.
func (m *Manager) finishPort(name string, s portSettings) error {
	req := m.request(unix.RTM_NEWLINK, 0)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	if s.alias != "" {
		req.AddData(nl.NewRtAttr(unix.IFLA_IFALIAS, []byte(s.alias)))
	}
	if s.built {
		req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(0)))
	}
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_SLAVE_KIND, nl.NonZeroTerminated("bridge"))
	port := info.AddRtAttr(nl.IFLA_INFO_SLAVE_DATA, nil)
	port.AddRtAttr(nl.IFLA_BRPORT_ISOLATED, boolAttr(s.isolated))
	port.AddRtAttr(nl.IFLA_BRPORT_MODE, boolAttr(s.hairpin))
	req.AddData(info)
	return netdev.Exec(req)
}

// retireByName moves link name into RetireGroup; ENODEV (no such link) is
// reported as found == false.
func (m *Manager) retireByName(name string) (found bool, err error) {
	req := m.request(unix.RTM_SETLINK, 0)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(netdev.RetireGroup)))
	err = netdev.Exec(req)
	if errors.Is(err, unix.ENODEV) {
		return false, nil
	}
	return err == nil, err
}

func boolAttr(b bool) []byte {
	if b {
		return []byte{1}
	}
	return []byte{0}
}
