// Command vxbridge is a Docker network + IPAM plugin: a Linux bridge per
// network, a veth pair per endpoint, state in bbolt.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/internal/server"
	"github.com/vxbridge/vxbridge/ipam"
	"github.com/vxbridge/vxbridge/metrics"
	"github.com/vxbridge/vxbridge/orphans"
	"github.com/vxbridge/vxbridge/ownership"
	"github.com/vxbridge/vxbridge/store"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "vxbridge:", err)
		os.Exit(exitCode(err))
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: vxbridge serve [flags] | vxbridge status [flags] | vxbridge doctor [flags] | vxbridge state check|restore [flags] | vxbridge cluster add-host|remove-host [flags] | vxbridge version")
	}
	switch args[0] {
	case "serve":
		cfg, err := parseServeFlags(args[1:], os.LookupEnv, stderr)
		if err != nil {
			return err
		}
		return serve(cfg, stderr)
	case "status":
		return runStatus(args[1:], stdout, stderr)
	case "doctor":
		return runDoctor(args[1:], stdout, stderr)
	case "state":
		return runState(args[1:], stdout, stderr)
	case "cluster":
		return runCluster(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "vxbridge", version)
		return nil
	default:
		return fmt.Errorf("unknown command %q: want serve, status, doctor, state, cluster or version", args[0])
	}
}

type serveConfig struct {
	socket            string
	socketGroup       string
	stateDir          string
	logLevel          slog.Level
	reconcileInterval time.Duration
	orphanGrace       time.Duration
	metricsListen     string
	iptablesBackend   string
	writableProcSys   bool
	netnsDir          string
	netnsMountNS      string
	crossHost         crossHostFlags
	adopt, purge      bool // ownership.FlagAdopt, ownership.FlagPurge
}

// parseServeFlags reads flags; each may also come from VXBRIDGE_<NAME>
// (dashes as underscores), the command line winning.
func parseServeFlags(args []string, env func(string) (string, bool), stderr io.Writer) (*serveConfig, error) {
	cfg := &serveConfig{}
	fs := flag.NewFlagSet("vxbridge serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.socket, "socket", "/run/docker/plugins/vxbridge.sock", "unix socket to serve on; docker's driver name is its base name")
	fs.StringVar(&cfg.socketGroup, "socket-group", "root", "group owning the socket (mode 0660)")
	fs.StringVar(&cfg.stateDir, "state-dir", "/var/lib/vxbridge", "directory holding the bbolt state file")
	fs.TextVar(&cfg.logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")
	fs.DurationVar(&cfg.reconcileInterval, "reconcile-interval", 10*time.Second, "how often the kernel and firewall are made to match the store (0: only at start)")
	fs.DurationVar(&cfg.orphanGrace, "orphan-grace", orphans.DefaultGrace, "free an endpoint never joined, or an endpoint address no endpoint holds, after this long (0: never)")
	fs.StringVar(&cfg.metricsListen, "metrics-listen", "", "serve Prometheus /metrics on this host:port (empty: off)")
	fs.StringVar(&cfg.iptablesBackend, "iptables-backend", "auto", "auto (the one holding docker's firewall), legacy, nft, nftables (vxbridge's own nftables tables, for docker's --firewall-backend=nftables), or path (iptables from PATH)")
	fs.StringVar(&cfg.netnsDir, "netns-dir", "/run/vxbridge/netns", "directory of the cross-host networks' own network namespaces (bind mounts that must outlive the plugin; empty: such networks live in the host's namespace)")
	fs.StringVar(&cfg.netnsMountNS, "netns-mount-ns", "", "mount namespace (a file such as /proc/1/ns/mnt) that --netns-dir is in and the namespaces are bind-mounted in (empty: the process's own; a managed plugin's dies with it); when set, dockerd's mount namespace is held from start too, where containers' names are learned")
	fs.BoolVar(&cfg.writableProcSys, "writable-proc-sys", false, "make /proc/sys/net writable at start (inside a managed plugin, where docker mounts /proc/sys read-only)")
	fs.BoolVar(&cfg.adopt, strings.TrimPrefix(ownership.FlagAdopt, "--"), false, "once: make records for the networks and endpoints the kernel shows that no record claims (a lost or replaced state file), and take them over")
	fs.BoolVar(&cfg.purge, strings.TrimPrefix(ownership.FlagPurge, "--"), false, "once: delete every vxbridge link, rule and namespace no record claims, whichever state file made it")
	cfg.crossHost.register(fs)
	if err := server.ApplyEnv(fs, "VXBRIDGE_", env); err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return cfg, nil
}

// serve is the plugin: open the state, build the kernel side, then the
// driver, the IPAM and the orphan collector on them, start the loops and
// serve docker on the socket until SIGINT or SIGTERM.
func serve(cfg *serveConfig, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	crash, err := crashHook(stderr) // nil but in test builds (-tags crashhook)
	if err != nil {
		return err
	}
	// The claim first: a second instance (same socket or network namespace,
	// whatever its state dir) fails here, before it touches state or kernel.
	instance, err := server.Claim(server.ClaimOptions{Socket: cfg.socket, Namespace: server.NamespaceLock})
	if err != nil {
		return err
	}
	defer instance.Release()
	db, err := openState(cfg.stateDir, log)
	if err != nil {
		return err
	}
	defer db.Close()
	enableForwardingEarly(cfg, db, log)
	k, err := openKernel(cfg, db, log)
	if err != nil {
		return err
	}
	defer k.close()
	mx := metrics.New(version)
	drv := newDriver(db, k, mx, crash, log)
	defer drv.Close()
	decision, err := decideOwnership(cfg, drv, db, log) // before anything touches the kernel's objects
	if err != nil {
		return err
	}
	col := orphans.New(orphans.Config{Records: db, Driver: drv, Links: k.links, Logger: log})
	ip, err := newIPAM(db, k, col, crash, log)
	if err != nil {
		return err
	}
	left, err := col.LeftWhileDown() // before serving: later Joins are never candidates
	if err != nil {
		log.Error("listing endpoints docker may have left while vxbridge was down", "err", err)
	}
	if err := startUp(drv, db, decision, log); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go drv.RunReconciler(ctx, cfg.reconcileInterval)
	go col.Run(ctx, ip, cfg.orphanGrace)
	go col.CollectLeftWhileDown(ctx, ip, left)
	k.watch(ctx, drv, log)
	report := statusReport(drv, k.follower, db.Path(), k.xh.clusterStatus(drv), decision.Status)
	mx.WatchState(report)
	if err := startMetrics(ctx, cfg.metricsListen, mx, log); err != nil {
		return err
	}

	handler := newHandler(drv, ip, mx, report, log)
	log.Info("vxbridge serving", "version", version, "socket", cfg.socket, "state", db.Path())
	return server.ServeUnix(ctx, server.Options{Path: cfg.socket, Group: cfg.socketGroup, Handler: handler, Logger: log, Instance: instance})
}

// newDriver is the driver on the state file and kernel side opened, its
// marks carrying the state file's identity.
func newDriver(db *store.DB, k *kernel, mx *metrics.Metrics, crash func(string), log *slog.Logger) *driver.Driver {
	o := db.Origin()
	return driver.New(driver.Config{Store: db, Links: k.links, Firewall: k.fw, Logger: log, OnReconcile: mx.ObserveReconcile,
		CrossHost: k.xh.driverConfig(), Ports: k.ports, Crash: crash, Namespaces: k.spaces,
		Identity: o.Identity, LegacyOwned: o.Assigned && !o.Empty()})
}

// newIPAM opens the IPAM on the state, with the collector's hooks and the
// cross-host address blocks, and hands it to what takes addresses from it.
func newIPAM(db *store.DB, k *kernel, col *orphans.Collector, crash func(string), log *slog.Logger) (*ipam.Driver, error) {
	ip, err := ipam.New(db, ipam.Options{Logger: log, HostRoutes: k.links.Routes, NewAllocator: k.xh.allocator(), Crash: crash,
		BeforeRelease: col.AddressReleased, PoolReleased: col.PoolReleased, AdoptedPool: adoptedPool(db)})
	if err != nil {
		return nil, err
	}
	k.xh.ipamReady(ip)
	return ip, nil
}

// enableForwardingEarly turns forwarding on for the networks in the state
// before anything slower runs and before the socket exists: dockerd reads
// ip_forward once, at its first check, and when vxbridge starts first
// (dist/vxbridge.service) that check must find it on. The start-up
// reconcile sets it again and reports a failure. A managed plugin starts
// after dockerd anyway (--writable-proc-sys): nothing to do there.
func enableForwardingEarly(cfg *serveConfig, db *store.DB, log *slog.Logger) {
	if cfg.writableProcSys {
		return
	}
	nets, err := db.Networks()
	if err != nil {
		return // the start-up reconcile reports the state it cannot read
	}
	v4, v6 := forwardingNeeded(nets)
	if !v4 {
		return
	}
	links, err := bridge.NewHere()
	if err == nil {
		err = links.EnableForwarding(v6)
		links.Close()
	}
	if err != nil {
		log.Warn("turning forwarding on at start", "err", err)
	}
}

// forwardingNeeded says whether any network routes (every one but
// --internal), and whether one of those has IPv6.
func forwardingNeeded(nets []store.Network) (v4, v6 bool) {
	for _, n := range nets {
		if !n.Internal {
			v4, v6 = true, v6 || len(n.IPv6) > 0
		}
	}
	return v4, v6
}
