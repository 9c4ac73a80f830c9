package bridge

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// dumpAttempts bounds retries of a netlink dump the kernel interrupted
// because the table changed under it (NLM_F_DUMP_INTR); the netlink library
// then returns partial results with ErrDumpInterrupted.
const dumpAttempts = 5

// retryDump runs dump until it completes uninterrupted. Every netlink dump of
// the package goes through it.
func retryDump[T any](what string, dump func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range dumpAttempts {
		v, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		var zero T
		return zero, fmt.Errorf("%s: %w", what, err)
	}
	return v, nil
}

func (m *Manager) linkList() ([]netlink.Link, error) {
	return retryDump("list links", m.nlh.LinkList)
}

func (m *Manager) addrList(link netlink.Link) ([]netlink.Addr, error) {
	return retryDump(fmt.Sprintf("list addresses of %q", link.Attrs().Name), func() ([]netlink.Addr, error) {
		return m.nlh.AddrList(link, netlink.FAMILY_ALL)
	})
}

// linkByName looks name up; a missing link is (nil, false, nil). LinkByName
// falls back to a dump on kernels without IFLA_IFNAME look-ups, hence the
// retry.
func (m *Manager) linkByName(name string) (netlink.Link, bool, error) {
	link, err := retryDump(fmt.Sprintf("look up link %q", name), func() (netlink.Link, error) {
		return m.nlh.LinkByName(name)
	})
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return link, true, nil
}

// linkByIndex is linkByName for an index.
func (m *Manager) linkByIndex(idx int) (netlink.Link, bool, error) {
	link, err := m.nlh.LinkByIndex(idx)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("look up link index %d: %w", idx, err)
	}
	return link, true, nil
}
