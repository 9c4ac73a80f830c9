package main

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/namespace"
	"github.com/vxbridge/vxbridge/vxlan"
)

// netnsRooms implements driver.Namespaces over package namespace: per
// namespace a bridge.Manager and a vxlan.Manager working in it, opened at
// the first Ensure and kept until Delete (their sockets keep the namespace
// alive, so Delete closes them).
type netnsRooms struct {
	dir    namespace.Dir
	host   netns.NsHandle  // the plugin's own namespace
	hostNL *netlink.Handle // where VXLAN devices are created (their socket is on the underlay)
	log    *slog.Logger

	mu   sync.Mutex
	open map[string]*netnsRoom
}

type netnsRoom struct {
	path  string
	h     netns.NsHandle
	links *bridge.Manager
	nlh   *netlink.Handle
	vx    *vxlan.Manager
}

func (r *netnsRoom) Links() driver.Links { return r.links }
func (r *netnsRoom) VXLAN() driver.VXLAN { return r.vx }
func (r *netnsRoom) Prepare() error      { return namespace.Prepare(r.h) }

func (r *netnsRoom) close() {
	r.links.Close()
	r.nlh.Close()
	r.h.Close()
}

// newNetnsRooms works in directory dir; close releases what it opened.
func newNetnsRooms(dir string, log *slog.Logger) (*netnsRooms, error) {
	host, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("handle of the plugin's own namespace: %w", err)
	}
	hostNL, err := netlink.NewHandleAt(host)
	if err != nil {
		host.Close()
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return &netnsRooms{dir: namespace.Dir{Path: dir}, host: host, hostNL: hostNL, log: log, open: map[string]*netnsRoom{}}, nil
}

// Ensure returns the namespace's rooms, creating and preparing the
// namespace if it is missing (also when its mount is gone: see cached).
func (n *netnsRooms) Ensure(name string) (driver.NetNS, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r := n.cached(name); r != nil {
		return r, nil
	}
	h, created, err := n.dir.Ensure(name)
	if err != nil {
		return nil, err
	}
	r, err := n.openRoom(name, h)
	if err != nil {
		h.Close()
		return nil, err
	}
	if created {
		if err := r.Prepare(); err != nil {
			r.close()
			return nil, err
		}
		n.log.Info("network namespace created", "netns", name, "path", r.path)
	}
	n.open[name] = r
	return r, nil
}

// cached returns the rooms opened for name, unless the namespace lost its
// mount (someone unmounted or removed it): those are closed and dropped,
// since without the mount it would not outlive this process. n.mu held.
func (n *netnsRooms) cached(name string) *netnsRoom {
	r := n.open[name]
	if r == nil {
		return nil
	}
	if ok, err := namespace.IsNamespace(r.path); err == nil && ok {
		return r
	}
	n.log.Warn("network namespace lost its mount", "netns", name, "path", r.path)
	r.close()
	delete(n.open, name)
	return nil
}

// Open returns the namespace's rooms if it exists, without making it.
func (n *netnsRooms) Open(name string) (driver.NetNS, bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r := n.cached(name); r != nil {
		return r, true, nil
	}
	h, found, err := n.dir.Open(name)
	if err != nil || !found {
		return nil, false, err
	}
	r, err := n.openRoom(name, h)
	if err != nil {
		h.Close()
		return nil, false, err
	}
	n.open[name] = r
	return r, true, nil
}

func (n *netnsRooms) openRoom(name string, h netns.NsHandle) (*netnsRoom, error) {
	links, err := bridge.NewAt(h)
	if err != nil {
		return nil, err
	}
	nlh, err := netlink.NewHandleAt(h)
	if err != nil {
		links.Close()
		return nil, fmt.Errorf("netlink handle in namespace %s: %w", name, err)
	}
	vx := vxlan.New(vxlan.Options{Handle: nlh, Create: n.hostNL, NetNS: int(h), Logger: n.log,
		InNetNS: func(fn func() error) error { return namespace.Do(h, fn) }})
	return &netnsRoom{path: filepath.Join(n.dir.Path, name), h: h, links: links.WithLogger(n.log), nlh: nlh, vx: vx}, nil
}

// Delete closes what Ensure opened in the namespace and removes it.
func (n *netnsRooms) Delete(name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r := n.open[name]; r != nil {
		r.links.Flush() // retired links go before their namespace does
		r.close()
		delete(n.open, name)
	}
	return n.dir.Delete(name)
}

func (n *netnsRooms) List() ([]string, error) { return n.dir.List(driver.NetNSPrefix) }

func (n *netnsRooms) HostFd() int { return int(n.host) }

func (n *netnsRooms) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for name, r := range n.open {
		r.close()
		delete(n.open, name)
	}
	n.hostNL.Close()
	n.host.Close()
}
