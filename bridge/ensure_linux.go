package bridge

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/internal/netdev"
)

// ensureLink returns the link called want's name, creating it from want if
// there is none. An existing link must be of want's kind and carry alias,
// else a *netdev.NotOwnedError. created tells the caller it must delete the
// link again if a later step fails.
func (m *Manager) ensureLink(want netlink.Link, alias string) (link netlink.Link, created bool, err error) {
	name := want.Attrs().Name
	link, found, err := m.nlh.Lookup(name)
	if err != nil {
		return nil, false, err
	}
	if found && netdev.Retired(link) {
		// Waiting for the reaper: its owner is gone, so it goes now.
		if err := m.nlh.Delete(link); err != nil {
			return nil, false, err
		}
		found = false
	}
	if !found {
		link, err = m.addLink(want)
		if err == nil {
			return link, true, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return nil, false, err
		}
		// Someone created the name since our look-up: judge it like any
		// existing link. For a veth the clash may be the peer's name instead.
		var lookErr error
		if link, found, lookErr = m.nlh.Lookup(name); lookErr != nil || !found {
			if v, ok := want.(*netlink.Veth); ok && lookErr == nil {
				if peer, ok, _ := m.nlh.Lookup(v.PeerName); ok {
					return nil, false, fmt.Errorf("create veth %q: the name of its container end is taken: %w", name,
						netdev.NotOwned(peer))
				}
			}
			return nil, false, err
		}
	}
	if err := netdev.CheckOwned(link, want.Type(), alias); err != nil {
		return nil, false, err
	}
	return link, false, nil
}

// addLink creates want and re-reads it, so the caller sees the index and
// the attributes the kernel filled in.
func (m *Manager) addLink(want netlink.Link) (netlink.Link, error) {
	name, kind := want.Attrs().Name, want.Type()
	if err := m.nlh.LinkAdd(want); err != nil {
		m.deleteIfCreated(want)
		return nil, fmt.Errorf("create %s %q: %w", kind, name, err)
	}
	link, found, err := m.nlh.Lookup(name)
	if err == nil && !found {
		err = errors.New("gone right after creation")
	}
	if err != nil {
		m.deleteCreated(want)
		return nil, fmt.Errorf("read back %s %q: %w", kind, name, err)
	}
	return link, nil
}

// deleteCreated deletes a link this call created, after a later step
// failed. Its own failure is logged: the step's error is what the caller
// must see.
func (m *Manager) deleteCreated(link netlink.Link) {
	if err := m.nlh.Delete(link); err != nil {
		m.log.Error("roll back half-built link", "link", link.Attrs().Name, "err", err)
	}
}

// deleteIfCreated deletes want after a failed LinkAdd if the link was
// created all the same: the netlink package enslaves (want's MasterIndex) in
// a second request after creating, and fills in the index in between.
func (m *Manager) deleteIfCreated(want netlink.Link) {
	if want.Attrs().Index != 0 {
		m.deleteCreated(want)
	}
}
