package main

import (
	"context"
	"log/slog"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/firewall"
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
	if cfg.writableProcSys {
		if err := remountProcSysNetWritable(); err != nil {
			return nil, err
		}
	}
	var err error
	if k.fw, k.follower, err = firewall.Open(cfg.iptablesBackend, log); err != nil {
		return nil, err
	}
	if k.links, err = bridge.NewHere(); err != nil {
		return nil, err
	}
	k.closers = append(k.closers, func() { k.links.Close() })
	if k.xh, err = startCrossHost(&cfg.crossHost, cfg.stateDir, db, k.fw, log); err != nil {
		return nil, err
	}
	k.closers = append(k.closers, k.xh.close)
	k.ports = portproxy.New(log)
	k.closers = append(k.closers, k.ports.Close)
	if cfg.netnsDir != "" {
		spaces, err := networks.New(cfg.netnsDir, log)
		if err != nil {
			return nil, err
		}
		k.closers = append(k.closers, spaces.Close)
		k.spaces = driverNamespaces{spaces}
	}
	return k, nil
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
