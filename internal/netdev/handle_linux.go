package netdev

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Handle is the netlink handle of one namespace with vxbridge's link
// look-ups and setters on top. The netlink package's own calls stay
// available on it for what is not about links (addresses, routes,
// neighbours).
type Handle struct {
	*netlink.Handle
}

// NewHandle wraps nlh; nil means the calling thread's namespace, each
// request on a socket of its own (the netlink package's zero Handle).
func NewHandle(nlh *netlink.Handle) Handle {
	if nlh == nil {
		nlh = &netlink.Handle{}
	}
	return Handle{nlh}
}

// Links lists the namespace's links.
func (h Handle) Links() ([]netlink.Link, error) {
	return RetryDump("list links", h.LinkList)
}

// Addrs lists l's addresses of both families.
func (h Handle) Addrs(l netlink.Link) ([]netlink.Addr, error) {
	return RetryDump(fmt.Sprintf("list addresses of %q", l.Attrs().Name), func() ([]netlink.Addr, error) {
		return h.AddrList(l, netlink.FAMILY_ALL)
	})
}

// Lookup finds the link called name; a missing link is (nil, false, nil).
// LinkByName falls back to a dump on kernels without IFLA_IFNAME look-ups,
// hence the retry.
func (h Handle) Lookup(name string) (netlink.Link, bool, error) {
	l, err := RetryDump(fmt.Sprintf("look up link %q", name), func() (netlink.Link, error) {
		return h.LinkByName(name)
	})
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return l, true, nil
}

// LookupIndex is Lookup for an index.
func (h Handle) LookupIndex(idx int) (netlink.Link, bool, error) {
	l, err := h.LinkByIndex(idx)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("look up link index %d: %w", idx, err)
	}
	return l, true, nil
}

// Delete deletes l; a link that vanished since the look-up counts as
// deleted.
func (h Handle) Delete(l netlink.Link) error {
	err := h.LinkDel(l)
	if err != nil && !errors.Is(err, unix.ENODEV) && !errors.As(err, new(netlink.LinkNotFoundError)) {
		return fmt.Errorf("delete link %q: %w", l.Attrs().Name, err)
	}
	return nil
}

// SetAlias marks l as vxbridge's.
func (h Handle) SetAlias(l netlink.Link, alias string) error {
	if l.Attrs().Alias == alias {
		return nil
	}
	if err := h.LinkSetAlias(l, alias); err != nil {
		return fmt.Errorf("set alias %q on %q: %w", alias, l.Attrs().Name, err)
	}
	return nil
}

// SetMTU leaves the kernel's choice when mtu is 0.
func (h Handle) SetMTU(l netlink.Link, mtu int) error {
	if mtu == 0 || l.Attrs().MTU == mtu {
		return nil
	}
	if err := h.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("set mtu %d on %q: %w", mtu, l.Attrs().Name, err)
	}
	return nil
}

// SetMaster makes l a port of the bridge master.
func (h Handle) SetMaster(l, master netlink.Link) error {
	if l.Attrs().MasterIndex == master.Attrs().Index {
		return nil
	}
	if err := h.LinkSetMaster(l, master); err != nil {
		return fmt.Errorf("enslave %q to %q: %w", l.Attrs().Name, master.Attrs().Name, err)
	}
	return nil
}

// SetUp brings l up.
func (h Handle) SetUp(l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring up %q: %w", l.Attrs().Name, err)
	}
	return nil
}

// SetBuilt moves l out of BuildGroup: the last step of a build.
func (h Handle) SetBuilt(l netlink.Link) error {
	if l.Attrs().Group != BuildGroup {
		return nil
	}
	if err := h.LinkSetGroup(l, 0); err != nil {
		return fmt.Errorf("mark %q built (group 0): %w", l.Attrs().Name, err)
	}
	return nil
}
