// Package networks keeps the networks' own namespaces (package namespace)
// open for the network driver: per namespace, a bridge.Manager and a
// vxlan.Manager working in it, opened at the first Ensure or Open and kept
// until Delete. Their netlink sockets keep the namespace alive, so Delete
// closes them before it removes the namespace.
//
// It is a package of its own, not part of namespace, because bridge
// imports namespace (to switch threads into a namespace).
package networks

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/internal/netdev"
	"github.com/vxbridge/vxbridge/namespace"
	"github.com/vxbridge/vxbridge/vxlan"
)

// Namespaces are the namespaces of one directory, with what works in each.
// Its methods are safe for concurrent use.
type Namespaces struct {
	dir    namespace.Dir
	host   netns.NsHandle  // the plugin's own namespace
	hostNL *netlink.Handle // where VXLAN devices are created (their socket is on the underlay)
	log    *slog.Logger

	mu   sync.Mutex
	open map[string]*Namespace
}

// Namespace is one open namespace with the managers working in it.
type Namespace struct {
	path  string
	h     netns.NsHandle
	links *bridge.Manager
	nlh   *netlink.Handle
	vx    *vxlan.Manager
}

// Links manages the bridges and veths in the namespace.
func (ns *Namespace) Links() *bridge.Manager { return ns.links }

// VXLAN manages the VXLAN devices in the namespace.
func (ns *Namespace) VXLAN() *vxlan.Manager { return ns.vx }

// Prepare re-applies the namespace's settings (namespace.Prepare).
func (ns *Namespace) Prepare() error { return namespace.Prepare(ns.h) }

func (ns *Namespace) close() {
	ns.links.Close()
	ns.nlh.Close()
	ns.h.Close()
}

// New works in directory dir (in dir.Mounts, which stays the caller's to
// close, after Close); Close releases what New opened.
func New(dir namespace.Dir, log *slog.Logger) (*Namespaces, error) {
	host, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("handle of the plugin's own namespace: %w", err)
	}
	hostNL, err := netdev.OpenHandle(host)
	if err != nil {
		host.Close()
		return nil, err
	}
	return &Namespaces{dir: dir, host: host, hostNL: hostNL, log: log, open: map[string]*Namespace{}}, nil
}

// Ensure returns namespace name, creating and preparing it if it is
// missing (also when its mount is gone: see cached).
func (s *Namespaces) Ensure(name string) (*Namespace, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ns := s.cached(name); ns != nil {
		return ns, nil
	}
	h, created, err := s.dir.Ensure(name)
	if err != nil {
		return nil, err
	}
	ns, err := s.openIn(name, h)
	if err != nil {
		h.Close()
		return nil, err
	}
	if created {
		if err := ns.Prepare(); err != nil {
			ns.close()
			return nil, err
		}
		s.log.Info("network namespace created", "netns", name, "path", ns.path)
	}
	s.open[name] = ns
	return ns, nil
}

// cached returns namespace name as opened before, unless it lost its mount
// (someone unmounted or removed it): that one is closed and dropped, since
// without the mount it would not outlive this process. s.mu held.
func (s *Namespaces) cached(name string) *Namespace {
	ns := s.open[name]
	if ns == nil {
		return nil
	}
	if ok, err := s.dir.Mounted(name); err == nil && ok {
		return ns
	}
	s.log.Warn("network namespace lost its mount", "netns", name, "path", ns.path)
	ns.close()
	delete(s.open, name)
	return nil
}

// Open returns namespace name if it exists, without making it.
func (s *Namespaces) Open(name string) (ns *Namespace, found bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ns := s.cached(name); ns != nil {
		return ns, true, nil
	}
	h, found, err := s.dir.Open(name)
	if err != nil || !found {
		return nil, false, err
	}
	ns, err = s.openIn(name, h)
	if err != nil {
		h.Close()
		return nil, false, err
	}
	s.open[name] = ns
	return ns, true, nil
}

// openIn opens the managers working in namespace h.
func (s *Namespaces) openIn(name string, h netns.NsHandle) (*Namespace, error) {
	links, err := bridge.NewAt(h)
	if err != nil {
		return nil, err
	}
	nlh, err := netdev.OpenHandle(h)
	if err != nil {
		links.Close()
		return nil, fmt.Errorf("namespace %s: %w", name, err)
	}
	vx := vxlan.New(vxlan.Options{Handle: nlh, Create: s.hostNL, NetNS: int(h), Namespace: &h, Logger: s.log,
		InNetNS: func(fn func() error) error { return namespace.Do(h, fn) }})
	return &Namespace{path: filepath.Join(s.dir.Path, name), h: h, links: links.WithLogger(s.log), nlh: nlh, vx: vx}, nil
}

// Delete closes what was opened in namespace name and removes it; a
// missing one is success.
func (s *Namespaces) Delete(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ns := s.open[name]; ns != nil {
		ns.links.Flush() // retired links go before their namespace does
		ns.close()
		delete(s.open, name)
	}
	return s.dir.Delete(name)
}

// List returns the names starting with prefix of the namespaces there are.
func (s *Namespaces) List(prefix string) ([]string, error) { return s.dir.List(prefix) }

// HostFd is an open handle of the plugin's own namespace.
func (s *Namespaces) HostFd() int { return int(s.host) }

// Close closes every namespace opened and the plugin's own handles; the
// namespaces themselves stay (their mounts keep them).
func (s *Namespaces) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, ns := range s.open {
		ns.close()
		delete(s.open, name)
	}
	s.hostNL.Close()
	s.host.Close()
}
