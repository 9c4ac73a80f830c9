package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/metrics"
	"github.com/vxbridge/vxbridge/status"
)

// newFirewall opens the firewall on the --iptables-backend. auto picks the
// backend holding docker's chains (see firewall.Detect); when docker has not
// made them yet, it starts on what `iptables` in PATH runs and the returned
// watch keeps looking (watch is nil when there is nothing to watch).
func newFirewall(backend string, log *slog.Logger) (*firewall.Firewall, *backendWatch, error) {
	b, err := firewall.ParseBackend(backend)
	if err != nil {
		return nil, nil, err
	}
	d := firewall.Detection{Backend: b, Reason: "set by --iptables-backend", Final: true}
	if b == "" {
		d = firewall.Detect()
		if !d.Final {
			if pb := firewall.PathBackend(); pb != firewall.BackendPath {
				d.Backend, d.Reason = pb, d.Reason+" ("+string(pb)+")"
			}
		}
	}
	fw, err := firewall.NewWithBackend(d.Backend)
	if err != nil {
		return nil, nil, err
	}
	log.Info("iptables backend", "backend", d.Backend, "reason", d.Reason)
	w := &backendWatch{cur: status.Firewall{Backend: string(d.Backend), Reason: d.Reason}, final: d.Final,
		detect: firewall.Detect, switchTo: fw.SwitchBackend, log: log}
	return fw, w, nil
}

// backendWatch follows docker's iptables backend after an undecided start
// (a managed plugin starts before dockerd builds its firewall at boot): once
// docker's chains appear in another backend than ours, it moves our rules
// there, since a packet must pass both backends' FORWARD chains.
type backendWatch struct {
	mu    sync.Mutex
	cur   status.Firewall
	final bool

	detect    func() firewall.Detection
	switchTo  func(firewall.Backend) error
	reconcile func() error // writes the rules into the new backend
	log       *slog.Logger
}

// Status is the backend in use and why, for the status report.
func (w *backendWatch) Status() status.Firewall {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// run looks every interval until the answer is final.
func (w *backendWatch) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for !w.isFinal() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.step()
		}
	}
}

func (w *backendWatch) isFinal() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.final
}

// step looks once.
func (w *backendWatch) step() {
	d := w.detect()
	if !d.Final {
		return
	}
	cur := w.Status()
	if d.Backend != firewall.BackendPath && string(d.Backend) != cur.Backend {
		if err := w.switchTo(d.Backend); err != nil {
			w.log.Error("move firewall rules to docker's iptables backend; trying again", "from", cur.Backend, "to", d.Backend, "err", err)
			return
		}
		w.log.Info("iptables backend changed to docker's", "from", cur.Backend, "to", d.Backend, "reason", d.Reason)
		if err := w.reconcile(); err != nil {
			w.log.Error("write firewall rules into the new backend", "err", err)
		}
		cur.Backend = string(d.Backend)
	}
	w.mu.Lock()
	w.cur, w.final = status.Firewall{Backend: cur.Backend, Reason: d.Reason}, true
	w.mu.Unlock()
}

// statusReport assembles what POST /VxBridge.Status answers (and what the
// metrics gauges read). cluster fills the cross-host part (etcd, VTEP,
// peers, FDB/neighbour counts); nil, or a nil answer, shows single-host.
func statusReport(drv *driver.Driver, fw *backendWatch, stateFile string, cluster func() (*status.Cluster, error)) func() (*status.Report, error) {
	return func() (*status.Report, error) {
		nets, eps, err := drv.Status()
		if err != nil {
			return nil, err
		}
		rep := &status.Report{Version: version, StateFile: stateFile, Networks: nets, Endpoints: eps, Firewall: fw.Status()}
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

// backendPoll is how often an undecided backend is looked at again.
const backendPoll = 2 * time.Second

// start follows docker's backend in the background until ctx ends.
func (w *backendWatch) start(ctx context.Context, drv *driver.Driver) {
	w.reconcile = func() error { _, err := drv.Reconcile(); return err }
	go w.run(ctx, backendPoll)
}
