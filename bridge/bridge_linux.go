package bridge

// Design notes.
//
// Ownership. Every link is marked and judged as package netdev says: an
// alias ("vxbridge:net:<id>", "vxbridge:ep:<id>") and, until it is built,
// netdev.BuildGroup. Any other link under a wanted name is refused with a
// *netdev.NotOwnedError and never changed or deleted; OwnedLinks finds
// leftovers to reconcile by their alias.
//
// Ensure = create-or-converge. EnsureBridge and EnsureVeth run the same
// queue of small idempotent steps (alias, mtu, addresses, master, up) on a
// link they just created and on one they found, so replaying a request is
// harmless and a changed config converges (the kernel drops a link's IPv6
// addresses whenever it goes down; a replay puts the gateway back). Only a
// link created by this very call is deleted again when a later step fails.
//
// Namespaces. Netlink requests go through m.nlh. Sysctl writes go through
// /proc/sys/net, which the kernel resolves against the namespace of the
// calling thread, not of a netlink socket: a Manager from NewAt switches a
// throwaway thread into its namespace for them; a Manager from New writes
// them in the namespace of whichever thread calls it (the daemon's own,
// or nstest's Do in tests).

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/internal/keylock"
	"github.com/vxbridge/vxbridge/internal/netdev"
	"golang.org/x/sys/unix"
)

// Manager creates and removes vxbridge's bridges and veths in one network
// namespace. It is safe for concurrent use; changes are serialised.
type Manager struct {
	nlh netdev.Handle
	// raw is a socket of the Manager's namespace for the requests the
	// netlink package has no call for (port_linux.go); nil for New, whose
	// requests open a socket each in the calling thread's namespace.
	raw *nl.SocketHandle
	// reapRaw is the reaper's own: a batch deletion keeps its socket busy
	// through the kernel's grace periods, long after RTNL is free again.
	reapRaw *nl.SocketHandle
	// ns is where sysctl writes happen when hasNS; otherwise they happen
	// in the calling thread's namespace.
	ns    netns.NsHandle
	hasNS bool
	// owned marks nlh (and ns, with hasNS) as opened by NewAt or NewHere,
	// for Close to release.
	owned bool
	log   *slog.Logger
	// names serialises changes per link name; different links change in
	// parallel (the kernel serialises what it must under RTNL).
	names keylock.Map
	reap  *netdev.Reaper // of netdev.RetireGroup, on reapRaw
}

// New returns a Manager working through nlh. A nil nlh means the calling
// thread's namespace: requests then open a socket each, as netlink's
// package-level functions do. Sysctl writes (IPv6 on the bridge, forwarding)
// always go to the calling thread's namespace; use NewAt when nlh is bound
// to another namespace. The caller keeps ownership of nlh.
func New(nlh *netlink.Handle) *Manager {
	return newManager(&Manager{nlh: netdev.NewHandle(nlh), ns: netns.None(), log: slog.Default()})
}

func newManager(m *Manager) *Manager {
	m.reap = netdev.NewReaper(m.reapRaw, netdev.RetireGroup, func(err error) {
		m.log.Error("delete retired links; the reconciler deletes them later", "err", err)
	})
	return m
}

// NewHere is New for the calling thread's namespace with one netlink socket
// of its own for every request, where New(nil) opens and closes a socket per
// request (socket, bind and close were a tenth of the plugin's CPU per
// endpoint). The netlink package serialises requests on the socket; it
// times out after netdev.RequestTimeout. Close releases it.
func NewHere() (*Manager, error) {
	nlh, err := netdev.OpenHandle(netns.None())
	if err != nil {
		return nil, err
	}
	m := &Manager{nlh: netdev.NewHandle(nlh), ns: netns.None(), owned: true, log: slog.Default()}
	if err := m.openRaw(); err != nil {
		nlh.Close()
		return nil, err
	}
	return newManager(m), nil
}

// openRaw opens raw and reapRaw in m.ns.
func (m *Manager) openRaw() error {
	var err error
	if m.raw, err = netdev.Socket(m.ns); err != nil {
		return err
	}
	if m.reapRaw, err = netdev.Socket(m.ns); err != nil {
		m.raw.Socket.Close()
		return err
	}
	return nil
}

// NewAt returns a Manager whose netlink requests and sysctl writes all go to
// namespace ns, whichever thread calls it. The Manager keeps its own
// duplicate of ns; release both with Close.
func NewAt(ns netns.NsHandle) (*Manager, error) {
	dup, err := unix.FcntlInt(uintptr(ns), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate namespace handle: %w", err)
	}
	nlh, err := netdev.OpenHandle(netns.NsHandle(dup))
	if err != nil {
		unix.Close(dup)
		return nil, fmt.Errorf("in namespace: %w", err)
	}
	m := &Manager{nlh: netdev.NewHandle(nlh), ns: netns.NsHandle(dup), hasNS: true, owned: true, log: slog.Default()}
	if err := m.openRaw(); err != nil {
		nlh.Close()
		unix.Close(dup)
		return nil, err
	}
	return newManager(m), nil
}

// WithLogger makes m log to l (rollback failures, which never replace the
// error being returned) instead of slog.Default(), and returns m.
func (m *Manager) WithLogger(l *slog.Logger) *Manager {
	if l != nil {
		m.log = l
	}
	return m
}

// Close releases the netlink handle and namespace NewAt or NewHere opened.
// It does nothing for a Manager from New.
func (m *Manager) Close() error {
	m.Flush()
	if !m.owned {
		return nil
	}
	m.nlh.Close()
	m.raw.Socket.Close()
	m.reapRaw.Socket.Close()
	if !m.hasNS {
		return nil
	}
	return m.ns.Close()
}

// Link reports whether a link called name exists and describes it.
func (m *Manager) Link(name string) (LinkInfo, bool, error) {
	if err := ValidateName(name); err != nil {
		return LinkInfo{}, false, err
	}
	link, found, err := m.nlh.Lookup(name)
	if err != nil || !found {
		return LinkInfo{}, false, err
	}
	info := linkInfo(link)
	if idx := link.Attrs().MasterIndex; idx != 0 {
		master, found, err := m.nlh.LookupIndex(idx)
		if err != nil {
			return LinkInfo{}, false, fmt.Errorf("master of %q: %w", name, err)
		}
		if found { // else the master went away since the look-up: no master
			info.Master = master.Attrs().Name
		}
	}
	return info, true, nil
}

// OwnedLinks lists every link whose alias starts with prefix. An empty
// prefix is refused: it would match every link of the host, and callers use
// the list to delete leftovers.
func (m *Manager) OwnedLinks(prefix string) ([]LinkInfo, error) {
	if prefix == "" {
		return nil, errors.New("list owned links: empty alias prefix")
	}
	links, names, err := m.linksByIndex()
	if err != nil {
		return nil, err
	}
	var owned []LinkInfo
	for _, l := range links {
		if !strings.HasPrefix(l.Attrs().Alias, prefix) {
			continue
		}
		info := linkInfo(l)
		info.Master = names[l.Attrs().MasterIndex]
		owned = append(owned, info)
	}
	return owned, nil
}

// linksByIndex lists the namespace's links and their names by index.
func (m *Manager) linksByIndex() ([]netlink.Link, map[int]string, error) {
	links, err := m.nlh.Links()
	if err != nil {
		return nil, nil, err
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	return links, names, nil
}

// DeleteLink deletes the link called name; a missing link is success.
// Deleting either end of a veth removes the pair.
func (m *Manager) DeleteLink(name string) error {
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("delete link: %w", err)
	}
	defer m.names.Lock(name)()
	link, found, err := m.nlh.Lookup(name)
	if err != nil || !found {
		return err
	}
	return m.nlh.Delete(link)
}

// DeleteBridge deletes bridge name if vxbridge owns it under alias. A missing
// bridge is success; someone else's link is left alone with a
// *netdev.NotOwnedError. Ports still enslaved are released, not deleted.
func (m *Manager) DeleteBridge(name, alias string) error {
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("delete bridge: %w", err)
	}
	if err := validateAlias(alias); err != nil {
		return fmt.Errorf("delete bridge %q: %w", name, err)
	}
	defer m.names.Lock(name)()
	link, found, err := m.nlh.Lookup(name)
	if err != nil || !found {
		return err
	}
	if err := netdev.CheckOwned(link, "bridge", alias); err != nil {
		return fmt.Errorf("delete bridge: %w", err)
	}
	return m.nlh.Delete(link)
}

func linkInfo(l netlink.Link) LinkInfo {
	a := l.Attrs()
	return LinkInfo{Name: a.Name, Alias: a.Alias, Kind: l.Type(), MTU: a.MTU, MAC: a.HardwareAddr.String()}
}
