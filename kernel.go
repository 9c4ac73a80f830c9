package main

import (
	"context"
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/internal/netdev"
	"github.com/vxbridge/vxbridge/names"
	"github.com/vxbridge/vxbridge/namespace"
	"github.com/vxbridge/vxbridge/namespace/networks"
	"github.com/vxbridge/vxbridge/portproxy"
	"github.com/vxbridge/vxbridge/store"
)

// kernel is the kernel side the driver works on, opened by openKernel.
type kernel struct {
	fw       *firewall.Firewall
	follower *firewall.BackendFollower
	links    *bridge.Manager // the plugin's own namespace
	xh       *crossHost
	ports    *portproxy.Manager // holds published host ports; Reconcile reserves them again
	spaces   driver.Namespaces  // nil without --netns-dir: cross-host networks in the host's namespace
	closers  []func()           // in opening order
	// The mount namespaces held from start (nil: the process's own): where
	// --netns-dir's namespaces are mounted, and where docker mounts the
	// containers' sandboxes.
	netnsMounts, sandboxMounts *namespace.MountNS
}

// openKernel opens the kernel side in the order it depends on itself; on
// an error it closes what it opened.
func openKernel(cfg *serveConfig, db *store.DB, log *slog.Logger) (_ *kernel, retErr error) {
	k := &kernel{}
	defer func() {
		if retErr != nil {
			k.close()
		}
	}()
	if err := netdev.UseRequestTimeout(); err != nil {
		return nil, err
	}
	if cfg.writableProcSys {
		if err := remountProcSysNetWritable(); err != nil {
			return nil, err
		}
	}
	if cfg.netnsMountNS != "" {
		if err := k.holdMounts(cfg, log); err != nil {
			return nil, err
		}
	}
	var err error
	if k.fw, k.follower, err = firewall.Open(cfg.iptablesBackend, log); err != nil {
		return nil, err
	}
	k.fw.SetOwner(db.Identity())
	if k.links, err = bridge.NewHere(); err != nil {
		return nil, err
	}
	k.closers = append(k.closers, func() { k.links.Close() })
	if k.xh, err = startCrossHost(&cfg.crossHost, cfg.stateDir, db, k.fw, k.sandboxMounts, log); err != nil {
		return nil, err
	}
	k.closers = append(k.closers, k.xh.close)
	k.ports = portproxy.New(log)
	k.closers = append(k.closers, k.ports.Close)
	if cfg.netnsDir != "" {
		if k.spaces, err = k.openNamespaces(cfg, log); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// holdMounts opens the mount namespace --netns-mount-ns names, the host's
// for a managed plugin (through /proc/1/ns/mnt), and, when names are
// learned, dockerd's, where docker mounts the containers' sandboxes (the
// host's too, unless dockerd runs with mounts of its own). Opening another
// process's namespace is all the plugin needs CAP_SYS_PTRACE for: it is
// dropped right after.
func (k *kernel) holdMounts(cfg *serveConfig, log *slog.Logger) error {
	mounts, err := namespace.OpenMountNS(cfg.netnsMountNS)
	if err != nil {
		return fmt.Errorf("--netns-mount-ns: %w; or leave it empty (VXBRIDGE_NETNS_MOUNT_NS=): a managed plugin's "+
			"cross-host namespaces then go with it, and its containers' names are not learned", err)
	}
	k.closers = append(k.closers, mounts.Close)
	k.netnsMounts, k.sandboxMounts = mounts, mounts
	if cfg.crossHost.endpoints != "" && cfg.crossHost.namesPort != 0 {
		if k.sandboxMounts, err = openDockerdMounts(); err != nil {
			log.Warn("names: dockerd's mount namespace not opened; containers' sandboxes are looked for in --netns-mount-ns",
				"netns_mount_ns", cfg.netnsMountNS, "err", err)
			k.sandboxMounts = mounts
		} else {
			k.closers = append(k.closers, k.sandboxMounts.Close)
		}
	}
	if err := dropCapability(unix.CAP_SYS_PTRACE); err != nil {
		log.Warn("CAP_SYS_PTRACE kept: could not drop it after opening --netns-mount-ns", "err", err)
	}
	return nil
}

// openDockerdMounts opens the mount namespace of the dockerd in this
// process's network namespace.
func openDockerdMounts() (*namespace.MountNS, error) {
	path, err := names.DockerdMountNS()
	if err != nil {
		return nil, err
	}
	return namespace.OpenMountNS(path)
}

// openNamespaces opens the cross-host networks' namespaces in --netns-dir,
// in the mount namespace --netns-mount-ns names when it is set.
func (k *kernel) openNamespaces(cfg *serveConfig, log *slog.Logger) (driver.Namespaces, error) {
	spaces, err := networks.New(namespace.Dir{Path: cfg.netnsDir, Mounts: k.netnsMounts}, log)
	if err != nil {
		return nil, err
	}
	k.closers = append(k.closers, spaces.Close)
	return driverNamespaces{spaces}, nil
}

// close closes in the reverse order of opening.
func (k *kernel) close() {
	for i := len(k.closers) - 1; i >= 0; i-- {
		k.closers[i]()
	}
}

// watch starts, until ctx ends, the loops that tell the driver what changed
// on the kernel side and in the cluster.
func (k *kernel) watch(ctx context.Context, drv *driver.Driver, log *slog.Logger) {
	k.xh.run(ctx)
	go func() {
		if err := k.links.WatchBridges(ctx, drv.BridgeAppeared); err != nil {
			log.Warn("not watching for new bridges; firewall jumps are checked every --reconcile-interval only", "err", err)
		}
	}()
	go func() {
		if err := firewall.WatchChanges(ctx, drv.FirewallChanged); err != nil {
			log.Warn("not watching nf_tables; flushed rules come back every --reconcile-interval only", "err", err)
		}
	}()
	go k.follower.Follow(ctx, func() error { _, err := drv.Reconcile(); return err })
}
