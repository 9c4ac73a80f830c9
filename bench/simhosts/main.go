// Command simhosts plays many vxbridge hosts against a real etcd for figure
// 6 of BENCHMARKS.md. Each synthetic host is a real cluster.Client of the
// checkout it is built from (its own etcd session, lease, host record,
// network memberships, address blocks and endpoints, kept by the client's
// Run loop) behind a real IPAM with vxbridge's block allocators, so it
// writes what a vxbridge host writes, through the same calls; only the
// kernel side is missing. The harness (bench/sim.go) starts it, drives it
// over -control (see package bench/sim) and reads what it wrote, and when,
// from -records.
//
//	simhosts -etcd http://127.0.0.1:2379 -hosts 1000 -endpoints 50 -shape 3of20 \
//	    -observers 1 -control /tmp/sim.sock -records /tmp/sim.jsonl
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vxbridge/vxbridge/bench/sim"
	"github.com/vxbridge/vxbridge/cluster"
)

type config struct {
	etcd        string
	prefix      string
	hosts       int
	endpoints   int
	shape       string
	observers   int
	control     string
	records     string
	ttl         time.Duration
	watchers    int
	concurrency int
	policy      string
	seed        uint64
	logLevel    slog.Level
}

func parseFlags(args []string) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("simhosts", flag.ContinueOnError)
	fs.StringVar(&c.etcd, "etcd", "http://127.0.0.1:2379", "etcd client URLs, comma-separated")
	fs.StringVar(&c.prefix, "prefix", cluster.DefaultPrefix, "etcd key prefix (vxbridge's --etcd-prefix)")
	fs.IntVar(&c.hosts, "hosts", 10, "synthetic hosts")
	fs.IntVar(&c.endpoints, "endpoints", 50, "endpoints per synthetic host, spread over its networks")
	fs.StringVar(&c.shape, "shape", "3of20", "membership: KofN, each host in K of N networks (1of1: one network spanning every host)")
	fs.IntVar(&c.observers, "observers", 1, "real plugins the harness adds (they size the subnets)")
	fs.StringVar(&c.control, "control", "", "unix socket of the control API (required)")
	fs.StringVar(&c.records, "records", "", "file the endpoint writes are recorded in, one JSON line each (required)")
	fs.DurationVar(&c.ttl, "ttl", cluster.DefaultTTL, "each host's lease TTL (vxbridge's --host-ttl)")
	fs.IntVar(&c.watchers, "watchers", 0, "how many of the hosts also follow their networks as a vxbridge host does, with nothing to program (the design at the pinned commit follows the whole cluster instead)")
	fs.IntVar(&c.concurrency, "concurrency", 32, "hosts brought up at once")
	fs.StringVar(&c.policy, "stop", policyOldest, "lifetime policy: which endpoint each start replaces on its host: oldest or random")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the host, network and endpoint choices")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelError, "level of the cluster clients' logs (stderr): one line per host and retry at warn")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case c.control == "" || c.records == "":
		return nil, errors.New("-control and -records are required")
	case c.policy != policyOldest && c.policy != policyRandom:
		return nil, fmt.Errorf("-stop %q: want %s or %s", c.policy, policyOldest, policyRandom)
	case c.concurrency < 1:
		return nil, fmt.Errorf("-concurrency %d: want at least 1", c.concurrency)
	}
	return c, nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "simhosts:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	shape, err := sim.ParseShape(cfg.shape)
	if err != nil {
		return err
	}
	plan, err := sim.NewPlan(shape, cfg.hosts, cfg.endpoints, cfg.observers)
	if err != nil {
		return err
	}
	rec, err := newRecorder(cfg.records)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	f := newFleet(plan, hostConfig{etcd: strings.Split(cfg.etcd, ","), prefix: cfg.prefix, ttl: cfg.ttl,
		port: 4789, log: log, rec: rec}, cfg.watchers, cfg.policy, cfg.seed)
	go f.bringUp(ctx, cfg.concurrency)
	serveErr := serveControl(ctx, cfg.control, f)
	stop()
	if err := rec.close(); err != nil && serveErr == nil {
		serveErr = fmt.Errorf("records file: %w", err)
	}
	return serveErr
}
