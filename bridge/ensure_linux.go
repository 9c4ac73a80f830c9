package bridge

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ensureLink returns the link called want's name, creating it from want if
// there is none. An existing link must be of want's kind and carry alias,
// else a *NotOwnedError. created tells the caller it must delete the link
// again if a later step fails.
func (m *Manager) ensureLink(want netlink.Link, alias string) (link netlink.Link, created bool, err error) {
	name, kind := want.Attrs().Name, want.Type()
	link, found, err := m.linkByName(name)
	if err != nil {
		return nil, false, err
	}
	if found && retired(link) {
		// Waiting for the reaper: its owner is gone, so it goes now.
		if err := m.linkDel(link); err != nil {
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
		if link, found, lookErr = m.linkByName(name); lookErr != nil || !found {
			if v, ok := want.(*netlink.Veth); ok && lookErr == nil {
				if peer, ok, _ := m.linkByName(v.PeerName); ok {
					a := peer.Attrs()
					return nil, false, fmt.Errorf("create veth %q: the name of its container end is taken: %w", name,
						&NotOwnedError{Name: a.Name, Kind: peer.Type(), Alias: a.Alias})
				}
			}
			return nil, false, err
		}
	}
	a := link.Attrs()
	if err := checkOwned(a.Name, link.Type(), a.Alias, kind, alias); err != nil {
		return nil, false, err
	}
	return link, false, nil
}

// addLink creates want and re-reads it, so the caller sees the index and
// the attributes the kernel filled in.
func (m *Manager) addLink(want netlink.Link) (netlink.Link, error) {
	name, kind := want.Attrs().Name, want.Type()
	if err := m.nlh.LinkAdd(want); err != nil {
		m.undoPartial(want)
		return nil, fmt.Errorf("create %s %q: %w", kind, name, err)
	}
	link, found, err := m.linkByName(name)
	if err == nil && !found {
		err = errors.New("gone right after creation")
	}
	if err != nil {
		m.undo(want)
		return nil, fmt.Errorf("read back %s %q: %w", kind, name, err)
	}
	return link, nil
}

// undo deletes a link this call created, after a later step failed. Its own
// failure is logged: the step's error is what the caller must see.
func (m *Manager) undo(link netlink.Link) {
	if err := m.linkDel(link); err != nil {
		m.log.Error("roll back half-built link", "link", link.Attrs().Name, "err", err)
	}
}

// undoPartial deletes want after a failed LinkAdd if the link was created
// all the same: the netlink package enslaves (want's MasterIndex) in a second
// request after creating, and fills in the index in between.
func (m *Manager) undoPartial(want netlink.Link) {
	if want.Attrs().Index != 0 {
		m.undo(want)
	}
}

// runSteps applies steps in order and stops at the first failure.
func runSteps(steps ...func() error) error {
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// The setup steps below each converge one property and do nothing when the
// link already has it, so they serve fresh and existing links alike.

func (m *Manager) setupAlias(link netlink.Link, alias string) error {
	if link.Attrs().Alias == alias {
		return nil
	}
	if err := m.nlh.LinkSetAlias(link, alias); err != nil {
		return fmt.Errorf("set alias %q on %q: %w", alias, link.Attrs().Name, err)
	}
	return nil
}

// setupMTU leaves the kernel's choice when mtu is 0.
func (m *Manager) setupMTU(link netlink.Link, mtu int) error {
	if mtu == 0 || link.Attrs().MTU == mtu {
		return nil
	}
	if err := m.nlh.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("set mtu %d on %q: %w", mtu, link.Attrs().Name, err)
	}
	return nil
}

// setupBuilt moves a link out of BuildGroup: the last step of a build.
func (m *Manager) setupBuilt(link netlink.Link) error {
	if link.Attrs().Group != BuildGroup {
		return nil
	}
	if err := m.nlh.LinkSetGroup(link, 0); err != nil {
		return fmt.Errorf("mark %q built (group 0): %w", link.Attrs().Name, err)
	}
	return nil
}

func (m *Manager) setupUp(link netlink.Link) error {
	if link.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := m.nlh.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up %q: %w", link.Attrs().Name, err)
	}
	return nil
}
