package plugin

import (
	"net/http"
	"time"

	"github.com/vxbridge/vxbridge/status"
)

// Observe makes every API call report its name, duration and error to fn
// (metrics). Call it before serving.
func (h *Handler) Observe(fn func(call string, took time.Duration, err error)) { h.observe = fn }

func (h *Handler) observed(call string, start time.Time, err error) {
	if h.observe != nil {
		h.observe(call, time.Since(start), err)
	}
}

// HandleStatus serves POST /VxBridge.Status with report's answer, for
// `vxbridge status` and `vxbridge doctor`. Docker never calls it, and it is
// not in the Activate manifest: it is not a docker API. Call it before
// serving.
func (h *Handler) HandleStatus(report func() (*status.Report, error)) {
	h.mux.HandleFunc("POST "+status.Path, func(w http.ResponseWriter, r *http.Request) {
		rep, err := report()
		if err != nil {
			h.log.Warn("status failed", "err", err)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"Err": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
}
