package bridge

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EnsureVeth creates the veth pair cfg describes, or converges the one
// vxbridge already owns under cfg.HostName: alias, MTU of the host end,
// enslaved to cfg.Bridge, port isolation, host end up. The peer end stays
// down for docker to move into the container, so it is only configured at
// creation (name, MAC, MTU). A host end that is not a veth carrying
// cfg.Alias is refused with a *NotOwnedError; a pair created by this call is
// deleted again if a later step fails.
func (m *Manager) EnsureVeth(cfg VethConfig) (retErr error) {
	if err := cfg.validate(); err != nil {
		return err
	}
	defer m.names.Lock(cfg.HostName)()
	br, found, err := m.linkByName(cfg.Bridge)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("veth %q: bridge %q does not exist", cfg.HostName, cfg.Bridge)
	}
	// Created up and on the bridge in one request (the netlink package
	// enslaves right after): the peer is down until docker moves it, so
	// nothing flows before the port flags below are set.
	want := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: cfg.HostName, MTU: cfg.MTU, MasterIndex: br.Attrs().Index, Flags: net.FlagUp,
			Group: BuildGroup},
		PeerName:         cfg.PeerName,
		PeerHardwareAddr: cfg.MAC,
		PeerMTU:          uint32(cfg.MTU),
	}
	var link netlink.Link
	var created bool
	if cfg.Fresh {
		link, created, err = m.createOrAdopt(want, cfg.Alias)
	} else {
		link, created, err = m.ensureLink(want, cfg.Alias)
	}
	if err != nil {
		return err
	}
	if created {
		// Deleting the host end takes the peer with it.
		defer func() {
			if retErr != nil {
				m.undo(link)
			}
		}()
	}
	return runSteps(
		func() error { return m.setupAlias(link, cfg.Alias) },
		func() error { return m.setupMTU(link, cfg.MTU) },
		func() error { return m.setupMaster(link, br) },
		func() error { return m.setupIsolated(link, cfg.Isolated) },
		func() error { return m.setupHairpin(link, cfg.Hairpin) },
		func() error { return m.setupUp(link) },
		func() error { return m.setupBuilt(link) },
	)
}

// createOrAdopt is ensureLink for a link that usually does not exist yet (a
// new endpoint's veth): it creates first and looks up only on EEXIST, and
// trusts want's attributes instead of reading the new link back. That saves
// three of the kernel round trips of creating an endpoint.
func (m *Manager) createOrAdopt(want netlink.Link, alias string) (netlink.Link, bool, error) {
	err := m.nlh.LinkAdd(want)
	if err == nil {
		return want, true, nil
	}
	if !errors.Is(err, unix.EEXIST) {
		m.undoPartial(want)
		return nil, false, fmt.Errorf("create %s %q: %w", want.Type(), want.Attrs().Name, err)
	}
	return m.ensureLink(want, alias)
}

func (m *Manager) setupMaster(link, br netlink.Link) error {
	if link.Attrs().MasterIndex == br.Attrs().Index {
		return nil
	}
	if err := m.nlh.LinkSetMaster(link, br); err != nil {
		return fmt.Errorf("enslave %q to %q: %w", link.Attrs().Name, br.Attrs().Name, err)
	}
	return nil
}

// setupIsolated sets the port flag unconditionally: one request, where
// reading it first would dump every port of every bridge. It must follow
// setupMaster, since only a bridge port has the flag. The bridge forwards
// nothing between two isolated ports; frames to the bridge's own address
// (the gateway) and to non-isolated ports (an uplink) still pass. That is
// how icc=false keeps containers apart.
func (m *Manager) setupHairpin(link netlink.Link, on bool) error {
	if err := m.nlh.LinkSetHairpin(link, on); err != nil {
		return fmt.Errorf("set hairpin=%t on bridge port %q: %w", on, link.Attrs().Name, err)
	}
	return nil
}

func (m *Manager) setupIsolated(link netlink.Link, isolated bool) error {
	if err := m.nlh.LinkSetIsolated(link, isolated); err != nil {
		return fmt.Errorf("set isolated=%t on bridge port %q: %w", isolated, link.Attrs().Name, err)
	}
	return nil
}
