package bridge

// Retiring links. RetireLink moves the link into netdev.RetireGroup (one
// cheap RTM_SETLINK) and the Manager's netdev.Reaper deletes the whole group
// in the background with a single RTM_DELLINK: the kernel's grace periods
// are paid once per batch (package netdev says what that saves), and the
// caller does not wait for them.
//
// A retired link keeps its name and alias until the reaper runs: callers
// must already have dropped the record that claims it (vxbridge's
// reconciler deletes links no record claims, so a crash before the reaper
// ran leaks nothing). EnsureVeth deletes a retired link of the name it wants
// before creating a new one, so an id reused at once never adopts it.

import (
	"fmt"

	"github.com/vxbridge/vxbridge/internal/netdev"
)

// PurgeUnfinished deletes every link left half-built (netdev.BuildGroup,
// VXLAN devices included), and waits for the reaper. Call it only when no
// Ensure* call can be running (vxbridge: under the driver's exclusive lock,
// at reconcile).
func (m *Manager) PurgeUnfinished() error {
	m.Flush()
	if err := netdev.DeleteGroup(m.reapRaw, netdev.BuildGroup); err != nil {
		return fmt.Errorf("delete half-built links: %w", err)
	}
	return nil
}

// RetireLink hands link name to the background reaper and returns at once;
// a missing link is success. Flush waits for the reaper.
func (m *Manager) RetireLink(name string) error {
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("retire link: %w", err)
	}
	defer m.names.Lock(name)()
	found, err := m.retireByName(name)
	if err != nil {
		m.log.Warn("retire link: deleting it now instead", "link", name, "err", err)
		link, found, err := m.nlh.Lookup(name)
		if err != nil || !found {
			return err
		}
		return m.nlh.Delete(link)
	}
	if found {
		m.reap.Kick()
	}
	return nil
}

// Flush waits until every link retired so far is deleted (or the reaper
// failed and logged why; the reconciler then deletes the link).
func (m *Manager) Flush() {
	_ = m.reap.Flush() // logged as it happened (newManager)
}
