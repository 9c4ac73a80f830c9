package vxlan

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// WatchMisses calls fn with every miss the kernel reports for device name
// (made with Device.OnDemand) until ctx ends. It returns early with an
// error when the device is missing or the subscription ends (the kernel
// dropped notifications under load: ENOBUFS); the caller subscribes again,
// which must follow a re-created device (a new interface index) anyway.
func (m *Manager) WatchMisses(ctx context.Context, name string, fn func(Miss)) error {
	link, ok, err := m.nlh.Lookup(name)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("vxlan device %q does not exist", name)
	}
	idx := link.Attrs().Index
	ch := make(chan netlink.NeighUpdate, 1024)
	done := make(chan struct{})
	defer close(done)
	failed := make(chan error, 1)
	opts := netlink.NeighSubscribeOptions{ErrorCallback: func(err error) {
		select {
		case failed <- err:
		default:
		}
	}}
	if m.ns != nil {
		opts.Namespace = m.ns
	}
	if err := netlink.NeighSubscribeWithOptions(ch, done, opts); err != nil {
		return fmt.Errorf("watch misses of %q: %w", name, err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			return fmt.Errorf("watch misses of %q: %w", name, err)
		case u, ok := <-ch:
			if !ok {
				return errors.New("watch misses of " + name + ": the subscription ended")
			}
			if miss, ok := missOf(u, idx); ok {
				fn(miss)
			}
		}
	}
}

// missOf reads a miss of device idx from a neighbour notification: the
// kernel asks (RTM_GETNEIGH) for an address (l3miss) or, on the bridge
// family, a MAC (l2miss).
func missOf(u netlink.NeighUpdate, idx int) (Miss, bool) {
	if u.Type != unix.RTM_GETNEIGH || u.LinkIndex != idx {
		return Miss{}, false
	}
	if u.Family == unix.AF_BRIDGE {
		if len(u.HardwareAddr) != 6 {
			return Miss{}, false
		}
		return Miss{MAC: u.HardwareAddr.String()}, true
	}
	ip, ok := netip.AddrFromSlice(u.IP)
	if !ok {
		return Miss{}, false
	}
	return Miss{IP: ip.Unmap()}, true
}
