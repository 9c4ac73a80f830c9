package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/ipam"
	"github.com/vxbridge/vxbridge/metrics"
	"github.com/vxbridge/vxbridge/plugin"
	"github.com/vxbridge/vxbridge/status"
)

// statusReport assembles what POST /VxBridge.Status answers (and what the
// metrics gauges read). cluster fills the cross-host part (etcd, VTEP,
// peers, FDB/neighbour counts); nil, or a nil answer, shows single-host.
func statusReport(drv *driver.Driver, fw *firewall.BackendFollower, stateFile string, cluster func() (*status.Cluster, error),
	own status.Ownership) func() (*status.Report, error) {
	return func() (*status.Report, error) {
		nets, eps, err := drv.Status()
		if err != nil {
			return nil, err
		}
		cur := fw.Current()
		own.Kept = drv.Kept()
		rep := &status.Report{Version: version, StateFile: stateFile, Networks: nets, Endpoints: eps,
			Firewall: status.Firewall{Backend: string(cur.Backend), Reason: cur.Reason}, Ownership: &own}
		if cluster != nil {
			if rep.Cluster, err = cluster(); err != nil {
				return nil, fmt.Errorf("cluster status: %w", err)
			}
		}
		return rep, nil
	}
}

// startMetrics binds --metrics-listen now (a taken port fails start-up) and
// serves /metrics until ctx ends. An empty address serves nothing.
func startMetrics(ctx context.Context, addr string, m *metrics.Metrics, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	l, err := metrics.Listen(addr)
	if err != nil {
		return err
	}
	go func() {
		if err := m.Serve(ctx, l, log); err != nil {
			log.Error("metrics stopped", "err", err)
		}
	}()
	return nil
}

// newHandler is docker's API on the driver and the IPAM, with the metrics
// of every call and the status report on its own path.
func newHandler(drv *driver.Driver, ip *ipam.Driver, mx *metrics.Metrics, report func() (*status.Report, error), log *slog.Logger) *plugin.Handler {
	h := plugin.New(drv, ip, log)
	h.Observe(mx.ObserveCall)
	h.HandleStatus(report)
	return h
}
