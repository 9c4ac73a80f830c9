// Package metrics exports vxbridge's Prometheus metrics: per-API-call
// latency and errors (fed by the plugin handler's Observe hook), reconcile
// runs, and gauges read from a status snapshot at scrape time (networks,
// endpoints, VXLAN peers, FDB/neighbour entries, etcd connection), so the
// gauges can never drift from what `vxbridge status` shows.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"

	"github.com/vxbridge/vxbridge/status"
)

// Metrics holds vxbridge's collectors in a registry of its own.
type Metrics struct {
	reg             *prometheus.Registry
	calls           *prometheus.HistogramVec
	callErrors      *prometheus.CounterVec
	reconciles      prometheus.Counter
	reconcileErrors prometheus.Counter
}

// New registers the collectors; WatchState adds the state gauges.
func New(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vxbridge_api_call_duration_seconds",
			Help:    "Duration of docker's plugin API calls, by call (e.g. NetworkDriver.CreateEndpoint).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"call"}),
		callErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vxbridge_api_call_errors_total",
			Help: "Plugin API calls that returned an error (bad request or failed), by call.",
		}, []string{"call"}),
		reconciles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vxbridge_reconcile_runs_total",
			Help: "Reconcile runs (start-up and every --reconcile-interval).",
		}),
		reconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vxbridge_reconcile_errors_total",
			Help: "Reconcile runs whose firewall reconcile failed.",
		}),
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "vxbridge_build_info",
		Help:        "Always 1; the version label says which vxbridge runs.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	info.Set(1)
	m.reg.MustRegister(m.calls, m.callErrors, m.reconciles, m.reconcileErrors, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// WatchState exports the state gauges, read from snapshot at every scrape.
// Call it once.
func (m *Metrics) WatchState(snapshot func() (*status.Report, error)) {
	m.reg.MustRegister(&stateCollector{snapshot: snapshot})
}

// ObserveCall records one API call; it fits plugin.Handler.Observe.
func (m *Metrics) ObserveCall(call string, took time.Duration, err error) {
	m.calls.WithLabelValues(call).Observe(took.Seconds())
	if err != nil {
		m.callErrors.WithLabelValues(call).Inc()
	} else {
		// Make the error series exist at 0, so rates work from the first call.
		m.callErrors.WithLabelValues(call)
	}
}

// ObserveReconcile records one reconcile run and whether it failed.
func (m *Metrics) ObserveReconcile(err error) {
	m.reconciles.Inc()
	if err != nil {
		m.reconcileErrors.Inc()
	}
}

// Handler serves the registry in the Prometheus text format. (promhttp
// would need a compression module go.mod does not pin; the text format is
// all a scraper needs.) Metrics that fail to gather are left out; only when
// nothing could be gathered is the answer a 500 with the error.
func (m *Metrics) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mfs, err := m.reg.Gather()
		if err != nil && len(mfs) == 0 {
			http.Error(w, "gather metrics: "+err.Error(), http.StatusInternalServerError)
			return
		}
		format := expfmt.NewFormat(expfmt.TypeTextPlain)
		w.Header().Set("Content-Type", string(format))
		enc := expfmt.NewEncoder(w, format)
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				return // the client went away
			}
		}
	})
}

// Listen binds addr (host:port) at once, so a taken port fails start-up
// with a clear error instead of later in a goroutine.
func Listen(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: %w", addr, err)
	}
	return l, nil
}

// Serve serves /metrics on l until ctx ends.
func (m *Metrics) Serve(ctx context.Context, l net.Listener, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("metrics serving", "address", l.Addr().String(), "path", "/metrics")
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics server: %w", err)
	}
	return nil
}
