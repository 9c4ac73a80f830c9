package bridge

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/internal/netdev"
)

// EnsureBridge creates the bridge cfg describes or converges the one vxbridge
// already owns under cfg.Name: alias, MTU, exactly cfg.Addrs as global
// addresses (link-local ones are left alone), up. A link of that name that
// is not a bridge carrying cfg.Alias is refused with a *netdev.NotOwnedError. A
// bridge created by this call is deleted again if a later step fails.
func (m *Manager) EnsureBridge(cfg BridgeConfig) (retErr error) {
	if err := cfg.validate(); err != nil {
		return err
	}
	mac, err := randomMAC()
	if err != nil {
		return fmt.Errorf("create bridge %q: %w", cfg.Name, err)
	}
	defer m.names.Lock(cfg.Name)()
	// No MTU here: an MTU given at creation does not count as set by the
	// user, and the kernel then resets it to the smallest port MTU as soon
	// as a port joins. SetMTU sets it through the ordinary path instead.
	want := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: cfg.Name, HardwareAddr: mac, Group: netdev.BuildGroup}}
	link, created, err := m.ensureLink(want, cfg.Alias)
	if err != nil {
		return err
	}
	if created {
		defer func() {
			if retErr != nil {
				m.deleteCreated(link)
			}
		}()
	}
	return m.setupGateway(link, cfg)
}

// setupGateway converges what makes link a network's interface in its
// namespace, a bridge or a gateway link alike: alias, MTU, exactly cfg.Addrs
// as global addresses, up, built.
func (m *Manager) setupGateway(link netlink.Link, cfg BridgeConfig) error {
	return netdev.RunSteps(
		func() error { return m.nlh.SetAlias(link, cfg.Alias) },
		func() error { return m.nlh.SetMTU(link, cfg.MTU) },
		func() error { return m.setupIPv6(link, cfg.Addrs) },
		func() error { return m.setupAddrs(link, cfg.Addrs) },
		func() error { return m.nlh.SetUp(link) },
		func() error { return m.nlh.SetBuilt(link) },
	)
}

// setupIPv6 enables IPv6 on the bridge when it gets an IPv6 gateway: the
// kernel refuses IPv6 addresses while disable_ipv6 is 1, which the host's
// conf/default may hand to new interfaces. A kernel without IPv6 has no such
// file; adding the address then fails with a clearer error.
func (m *Manager) setupIPv6(link netlink.Link, addrs []netip.Prefix) error {
	if !slices.ContainsFunc(addrs, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
		return nil
	}
	name := link.Attrs().Name
	err := m.setSysctl("net/ipv6/conf/"+name+"/disable_ipv6", "0")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("enable ipv6 on %q: %w", name, err)
	}
	return nil
}

// setupAddrs makes want the bridge's global addresses. Stale ones go first:
// removing a primary IPv4 address also removes the secondaries of its
// subnet, which may include a wanted one, re-added just after.
func (m *Manager) setupAddrs(link netlink.Link, want []netip.Prefix) error {
	name := link.Attrs().Name
	have, err := m.nlh.Addrs(link)
	if err != nil {
		return err
	}
	for _, a := range have {
		p, ok := prefixOf(a.IPNet)
		if !ok || !isStaleAddr(p, want) {
			continue
		}
		if err := m.nlh.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove address %s from %q: %w", p, name, err)
		}
	}
	for _, p := range want {
		addr := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			// Without NODAD the address stays "tentative" (unusable) for a
			// second or two of duplicate address detection, and for as long
			// as the bridge has no carrier, i.e. no port up: the gateway would
			// not answer the container's first packets.
			addr.Flags = unix.IFA_F_NODAD
		}
		// Replace, not add: replaying is harmless and a flag change applies.
		if err := m.nlh.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("add address %s to %q: %w", p, name, err)
		}
	}
	return nil
}
