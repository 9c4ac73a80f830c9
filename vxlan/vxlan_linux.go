package vxlan

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/internal/netdev"
)

// Options configure a Manager. The zero value works in the calling
// process's namespace.
type Options struct {
	// Handle is the netlink handle of the namespace to work in.
	Handle *netlink.Handle
	// InNetNS runs fn where /proc/sys/net shows that namespace (for the
	// neighbour-table limits); nil runs it on the calling thread.
	InNetNS func(fn func() error) error
	// ProcSys is where the sysctl tree is read and written; default
	// /proc/sys. The neighbour-table limits are global to the machine
	// (every namespace sees the same gc_thresh), so tests point this at a
	// copy.
	ProcSys string
	Logger  *slog.Logger
	// Create, when set, is the handle of the namespace devices are created
	// in and their underlay (Device.Parent) looked up in, where Handle is
	// another namespace, of fd NetNS, they are moved into at creation: the
	// device's UDP socket stays on the underlay, in Create's namespace,
	// while the device is a port of a bridge in Handle's. Nil: both are
	// Handle's namespace.
	Create *netlink.Handle
	NetNS  int
	// Namespace is Handle's namespace, where miss notifications are
	// subscribed to (WatchMisses); nil: the calling process's.
	Namespace *netns.NsHandle
}

// Manager makes VXLAN devices and their FDB and neighbour entries.
type Manager struct {
	nlh     netdev.Handle
	create  netdev.Handle // where devices are created (Options.Create)
	netNS   int           // fd of nlh's namespace when create is another
	inNS    func(fn func() error) error
	procSys string
	log     *slog.Logger
	ns      *netns.NsHandle

	mu           sync.Mutex
	warnedHidden bool // the hidden-limits warning is logged once
}

// New returns a Manager.
func New(opts Options) *Manager {
	m := &Manager{nlh: netdev.NewHandle(opts.Handle), inNS: opts.InNetNS, procSys: opts.ProcSys, log: opts.Logger,
		create: netdev.NewHandle(opts.Create), netNS: opts.NetNS, ns: opts.Namespace}
	if m.procSys == "" {
		m.procSys = "/proc/sys"
	}
	if opts.Create == nil {
		m.create, m.netNS = m.nlh, 0
	}
	if m.inNS == nil {
		m.inNS = func(fn func() error) error { return fn() }
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	return m
}

// EnsureDevice makes d exist as configured, up, and a port of its bridge.
// An owned device whose fixed attributes (VNI, port, local address, parent)
// differ is re-created; any other link with its name is refused with a
// *netdev.NotOwnedError (package netdev's ownership rule).
func (m *Manager) EnsureDevice(d Device) (retErr error) {
	if err := d.Validate(); err != nil {
		return err
	}
	br, ok, err := m.nlh.Lookup(d.Bridge)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("vxlan device %s: bridge %q does not exist", d.Name, d.Bridge)
	}
	want, err := m.vxlanLink(d)
	if err != nil {
		return err
	}
	link, ok, err := m.keptDevice(d, want)
	if err != nil {
		return err
	}
	if !ok {
		if link, err = m.createDevice(d, want); err != nil {
			return err
		}
		defer func() {
			if retErr != nil {
				if err := m.nlh.Delete(link); err != nil {
					m.log.Error("roll back vxlan device", "device", d.Name, "err", err)
				}
			}
		}()
	}
	return m.setup(link, br, d)
}

// keptDevice returns the existing device called d.Name if it can serve as
// want; ok is false when there is none or it was outdated (then deleted).
func (m *Manager) keptDevice(d Device, want *netlink.Vxlan) (link netlink.Link, ok bool, err error) {
	link, ok, err = m.nlh.Lookup(d.Name)
	if err != nil || !ok {
		return nil, false, err
	}
	if err := netdev.CheckOwned(link, want.Type(), d.Alias); err != nil {
		return nil, false, fmt.Errorf("vxlan device: %w", err)
	}
	reason := incompatible(link, want)
	if reason == "" {
		return link, true, nil
	}
	m.log.Info("re-creating vxlan device", "device", d.Name, "reason", reason)
	if err := m.nlh.Delete(link); err != nil {
		return nil, false, fmt.Errorf("delete outdated vxlan device %q: %w", d.Name, err)
	}
	return nil, false, nil
}

// createDevice creates want where devices are created, moved into nlh's
// namespace, and reads it back there.
func (m *Manager) createDevice(d Device, want *netlink.Vxlan) (netlink.Link, error) {
	if m.netNS != 0 {
		want.Namespace = netlink.NsFd(m.netNS)
	}
	if err := m.create.LinkAdd(want); err != nil {
		return nil, fmt.Errorf("create vxlan device %q (vni %d): %w", d.Name, d.VNI, err)
	}
	link, ok, err := m.nlh.Lookup(d.Name)
	if err == nil && !ok {
		err = errors.New("gone right after creation")
	}
	if err != nil {
		// Still in the build group: the purge of half-built links takes it.
		return nil, fmt.Errorf("read back vxlan device %q: %w", d.Name, err)
	}
	return link, nil
}

// setup converges the mutable attributes: alias, MTU, master, port
// isolation, up, and last leaves the build group.
func (m *Manager) setup(link, br netlink.Link, d Device) error {
	return netdev.RunSteps(
		func() error { return m.nlh.SetAlias(link, d.Alias) },
		func() error { return m.nlh.SetMTU(link, d.MTU) },
		func() error { return m.nlh.SetMaster(link, br) },
		func() error { return m.setIsolated(link, d.Isolated) },
		func() error { return m.nlh.SetUp(link) },
		func() error { return m.nlh.SetBuilt(link) },
	)
}

// setIsolated writes every time: reading the flag back would cost a request
// as well.
func (m *Manager) setIsolated(link netlink.Link, isolated bool) error {
	if err := m.nlh.LinkSetIsolated(link, isolated); err != nil {
		return fmt.Errorf("set port isolation %t on %q: %w", isolated, link.Attrs().Name, err)
	}
	return nil
}

func (m *Manager) vxlanLink(d Device) (*netlink.Vxlan, error) {
	v := &netlink.Vxlan{
		// Born in the build group: a crash before the alias is set leaves
		// a device the reconciler recognises (package netdev).
		LinkAttrs: netlink.LinkAttrs{Name: d.Name, MTU: d.MTU, Group: netdev.BuildGroup},
		VxlanId:   int(d.VNI),
		SrcAddr:   net.IP(d.Local.AsSlice()),
		Port:      d.Port,
		// Learning off: the FDB holds only what etcd says. Proxy on: ARP
		// and ND are answered from the device's neighbour table.
		Learning: false,
		Proxy:    true,
		L2miss:   d.OnDemand,
		L3miss:   d.OnDemand,
	}
	if d.Parent != "" {
		parent, ok, err := m.create.Lookup(d.Parent)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("vxlan device %s: underlay interface %q does not exist", d.Name, d.Parent)
		}
		v.VtepDevIndex = parent.Attrs().Index
	}
	return v, nil
}

// incompatible says why an existing device cannot serve as want ("" if it can).
func incompatible(link netlink.Link, want *netlink.Vxlan) string {
	have, ok := link.(*netlink.Vxlan)
	switch {
	case !ok:
		return fmt.Sprintf("it is a %s link", link.Type())
	case have.VxlanId != want.VxlanId:
		return fmt.Sprintf("vni %d, want %d", have.VxlanId, want.VxlanId)
	case have.Port != want.Port:
		return fmt.Sprintf("udp port %d, want %d", have.Port, want.Port)
	case !have.SrcAddr.Equal(want.SrcAddr):
		return fmt.Sprintf("local address %s, want %s", have.SrcAddr, want.SrcAddr)
	case have.VtepDevIndex != want.VtepDevIndex:
		return fmt.Sprintf("underlay interface index %d, want %d", have.VtepDevIndex, want.VtepDevIndex)
	case have.Learning || !have.Proxy:
		return fmt.Sprintf("learning %t proxy %t, want learning off, proxy on", have.Learning, have.Proxy)
	case have.L2miss != want.L2miss || have.L3miss != want.L3miss:
		return fmt.Sprintf("miss notifications %t, want %t (peer programming changed)", have.L3miss, want.L3miss)
	}
	return ""
}

// DeleteDevice removes the device when vxbridge owns it under alias (else a
// *netdev.NotOwnedError); a missing device is success.
func (m *Manager) DeleteDevice(name, alias string) error {
	link, ok, err := m.nlh.Lookup(name)
	if err != nil || !ok {
		return err
	}
	if err := netdev.CheckOwned(link, "vxlan", alias); err != nil {
		return fmt.Errorf("delete vxlan device: %w", err)
	}
	return m.nlh.Delete(link)
}

// Entries reads the entries vxbridge manages on the device: FDB entries of
// the device itself (NTF_SELF) with a remote address, and neighbour entries
// that resolve (permanent, or reachable/stale/delay/probe: programmed on
// demand).
func (m *Manager) Entries(name string) (Table, error) {
	var t Table
	link, ok, err := m.nlh.Lookup(name)
	if err != nil {
		return t, err
	}
	if !ok {
		return t, fmt.Errorf("vxlan device %q does not exist", name)
	}
	idx := link.Attrs().Index
	fdb, err := netdev.RetryDump("list fdb of "+name, func() ([]netlink.Neigh, error) {
		return m.nlh.NeighList(idx, unix.AF_BRIDGE)
	})
	if err != nil {
		return t, err
	}
	for _, n := range fdb {
		dst, ok := netip.AddrFromSlice(n.IP)
		if n.Flags&netlink.NTF_SELF == 0 || !ok || len(n.HardwareAddr) != 6 {
			continue
		}
		t.FDB = append(t.FDB, FDB{MAC: n.HardwareAddr.String(), Dst: dst.Unmap()})
	}
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		neighs, err := netdev.RetryDump("list neighbours of "+name, func() ([]netlink.Neigh, error) {
			return m.nlh.NeighList(idx, family)
		})
		if err != nil {
			return t, err
		}
		for _, n := range neighs {
			ip, ok := netip.AddrFromSlice(n.IP)
			if n.State&usable == 0 || !ok || len(n.HardwareAddr) != 6 {
				continue
			}
			t.Neigh = append(t.Neigh, Neigh{IP: ip.Unmap(), MAC: n.HardwareAddr.String()})
		}
	}
	t.sort()
	return t, nil
}

// Sync makes the device's entries equal desired and returns what it
// changed. Every change is attempted; the errors are joined.
func (m *Manager) Sync(name string, desired Table) (Changes, error) {
	actual, err := m.Entries(name)
	if err != nil {
		return Changes{}, err
	}
	c := Plan(desired, actual)
	return c, m.Apply(name, c)
}

// Apply writes c to the device: replaces first, deletes after, so a moved
// entry never has a gap. Deleting a missing entry is success.
func (m *Manager) Apply(name string, c Changes) error {
	if c.Empty() {
		return nil
	}
	link, ok, err := m.nlh.Lookup(name)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("vxlan device %q does not exist", name)
	}
	idx := link.Attrs().Index
	var errs []error
	for _, e := range c.SetFDB {
		if err := m.nlh.NeighSet(fdbNeigh(idx, e, c.Transient)); err != nil {
			errs = append(errs, fmt.Errorf("set fdb %s -> %s on %s: %w", e.MAC, e.Dst, name, err))
		}
	}
	for _, e := range c.SetNeigh {
		if err := m.nlh.NeighSet(neighNeigh(idx, e, c.Transient)); err != nil {
			errs = append(errs, fmt.Errorf("set neighbour %s -> %s on %s: %w", e.IP, e.MAC, name, err))
		}
	}
	for _, e := range c.DelNeigh {
		if err := m.nlh.NeighDel(neighNeigh(idx, e, false)); err != nil && !notFound(err) {
			errs = append(errs, fmt.Errorf("delete neighbour %s on %s: %w", e.IP, name, err))
		}
	}
	for _, e := range c.DelFDB {
		if err := m.nlh.NeighDel(fdbNeigh(idx, e, false)); err != nil && !notFound(err) {
			errs = append(errs, fmt.Errorf("delete fdb %s -> %s on %s: %w", e.MAC, e.Dst, name, err))
		}
	}
	return errors.Join(errs...)
}

// usable are the neighbour states of an entry that resolves.
const usable = netlink.NUD_PERMANENT | netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE

func notFound(err error) bool { return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) }

// fdbNeigh is the FDB entry e of device idx: permanent, or reachable
// (aged out by the device when unused) when transient.
func fdbNeigh(idx int, e FDB, transient bool) *netlink.Neigh {
	mac, _ := net.ParseMAC(e.MAC)
	state := netlink.NUD_PERMANENT | netlink.NUD_NOARP
	if transient {
		state = netlink.NUD_REACHABLE
	}
	return &netlink.Neigh{
		LinkIndex:    idx,
		Family:       unix.AF_BRIDGE,
		State:        state,
		Flags:        netlink.NTF_SELF,
		IP:           net.IP(e.Dst.AsSlice()),
		HardwareAddr: mac,
	}
}

// neighNeigh is the neighbour entry e of device idx: permanent, or
// reachable (garbage-collected when unused) when transient.
func neighNeigh(idx int, e Neigh, transient bool) *netlink.Neigh {
	mac, _ := net.ParseMAC(e.MAC)
	family := unix.AF_INET
	if e.IP.Is6() {
		family = unix.AF_INET6
	}
	state := netlink.NUD_PERMANENT
	if transient {
		state = netlink.NUD_REACHABLE
	}
	return &netlink.Neigh{
		LinkIndex:    idx,
		Family:       family,
		State:        state,
		IP:           net.IP(e.IP.AsSlice()),
		HardwareAddr: mac,
	}
}

// EnsureNeighLimits raises the namespace's default neighbour-table limits of
// both families so want counted entries fit (see RaisedLimits); it never
// lowers them. It reports the limits it found and whether it changed them.
func (m *Manager) EnsureNeighLimits(want int) (before NeighLimits, changed bool, err error) {
	err = m.inNS(func() error {
		for _, fam := range []string{"ipv4", "ipv6"} {
			dir := filepath.Join(m.procSys, "net", fam, "neigh/default")
			cur, err := readLimits(dir)
			if errors.Is(err, fs.ErrNotExist) {
				// Outside the initial namespace the kernel hides the
				// limits (they are the machine's, shared by all).
				m.warnHidden(want, dir)
				continue
			}
			if err != nil {
				return err
			}
			if fam == "ipv4" {
				before = cur
			}
			raised, ch := RaisedLimits(cur, want)
			if !ch {
				continue
			}
			// Write thresh3 first: the kernel does not enforce an order,
			// but a reader never sees thresh2 above thresh3.
			for i, v := range []int{raised.Thresh3, raised.Thresh2, raised.Thresh1} {
				name := fmt.Sprintf("gc_thresh%d", 3-i)
				if err := os.WriteFile(filepath.Join(dir, name), []byte(strconv.Itoa(v)), 0o644); err != nil {
					return fmt.Errorf("raise %s/%s to %d: %w", dir, name, v, err)
				}
			}
			changed = true
			m.log.Warn("raised neighbour-table limits for cross-host peers", "family", fam,
				"gc_thresh3_before", cur.Thresh3, "gc_thresh3", raised.Thresh3, "entries", want)
		}
		return nil
	})
	return before, changed, err
}

func (m *Manager) warnHidden(want int, dir string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.warnedHidden {
		return
	}
	m.warnedHidden = true
	m.log.Warn("neighbour-table limits (gc_thresh) are not visible in this network namespace: make sure gc_thresh3 in the initial namespace exceeds the permanent entries vxbridge programs plus the host's own",
		"entries", want, "dir", dir)
}

func readLimits(dir string) (NeighLimits, error) {
	var l NeighLimits
	for i, p := range []*int{&l.Thresh1, &l.Thresh2, &l.Thresh3} {
		path := filepath.Join(dir, fmt.Sprintf("gc_thresh%d", i+1))
		b, err := os.ReadFile(path)
		if err != nil {
			return l, fmt.Errorf("read %s: %w", path, err)
		}
		if *p, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			return l, fmt.Errorf("read %s: %w", path, err)
		}
	}
	return l, nil
}
