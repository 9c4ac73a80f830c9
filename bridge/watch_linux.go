package bridge

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// WatchBridges calls fn with the name of every bridge that appears in the
// Manager's namespace until ctx ends. vxbridge uses it to notice docker
// creating a network: dockerd then inserts its own FORWARD rules above
// vxbridge's jump, which must be put back in place promptly.
func (m *Manager) WatchBridges(ctx context.Context, fn func(name string)) error {
	ch := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	opts := netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) { m.log.Warn("link watch", "err", err) },
	}
	if m.hasNS {
		ns := m.ns
		opts.Namespace = &ns
	}
	if err := netlink.LinkSubscribeWithOptions(ch, done, opts); err != nil {
		return fmt.Errorf("subscribe to link events: %w", err)
	}
	defer close(done)
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-ch:
			if !ok {
				return fmt.Errorf("link event stream closed")
			}
			if u.Header.Type == unix.RTM_NEWLINK && u.Link != nil && u.Link.Type() == "bridge" {
				fn(u.Link.Attrs().Name)
			}
		}
	}
}
