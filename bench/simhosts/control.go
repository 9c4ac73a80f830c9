package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/vxbridge/vxbridge/bench/sim"
)

// serveControl answers the harness on the unix socket path until ctx ends
// (see package bench/sim for the protocol).
func serveControl(ctx context.Context, path string, f *fleet) error {
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) { reply(w, f.status(), nil) })
	mux.HandleFunc("POST /churn", func(w http.ResponseWriter, r *http.Request) {
		var req sim.ChurnRequest
		if !decode(w, r, &req) {
			return
		}
		res, err := f.churn(r.Context(), req)
		reply(w, res, err)
	})
	mux.HandleFunc("POST /add", func(w http.ResponseWriter, r *http.Request) {
		var req sim.AddRequest
		if !decode(w, r, &req) {
			return
		}
		res, err := f.add(r.Context(), req)
		reply(w, res, err)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("control socket: %w", err)
	}
	return nil
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		http.Error(w, "decode request: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

// reply writes v, or err as a 500 whose body names it.
func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
