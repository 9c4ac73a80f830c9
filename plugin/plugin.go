// Package plugin serves docker's NetworkDriver and IpamDriver APIs on one
// HTTP handler: it decodes requests, calls the driver or the IPAM, and shapes
// replies and errors the way docker reads them. It holds no state and never
// touches the kernel or the store.
package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
	"github.com/docker/go-plugins-helpers/sdk"
)

// MaxBodyBytes caps a request body: the largest real request (CreateNetwork
// with its options) is a few KiB.
const MaxBodyBytes = 1 << 20

// Manifest answers /Plugin.Activate: both drivers on one socket.
const Manifest = `{"Implements": ["NetworkDriver", "IpamDriver"]}`

// IPAMCapabilities is the IpamDriver.GetCapabilities reply. The helpers' type
// lacks RequiresRequestReplay.
type IPAMCapabilities struct {
	RequiresMACAddress    bool
	RequiresRequestReplay bool
}

// Handler is the plugin's HTTP handler.
type Handler struct {
	mux     *http.ServeMux
	log     *slog.Logger
	observe func(call string, took time.Duration, err error) // see Observe
}

// New returns the handler for drv and ip.
func New(drv network.Driver, ip ipam.Ipam, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{mux: http.NewServeMux(), log: log}
	h.mux.HandleFunc("POST /Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", sdk.DefaultContentTypeV1_1)
		io.WriteString(w, Manifest+"\n")
	})
	h.networkRoutes(drv)
	h.ipamRoutes(ip)
	return h
}

// ServeHTTP implements http.Handler. Unknown paths answer 404, which docker
// reads as "not implemented".
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// api tells how an API spells its error field on a 200 reply.
type api struct {
	prefix   string
	errField string
}

var (
	networkAPI = api{"NetworkDriver", "Err"}
	ipamAPI    = api{"IpamDriver", "Error"}
)

// route registers method with a typed call: decode Req, call fn, encode its
// reply or its error.
func route[Req, Resp any](h *Handler, a api, method string, fn func(*Req) (Resp, error)) {
	name := a.prefix + "." + method
	h.mux.HandleFunc("POST /"+name, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		req := new(Req)
		if err := decode(w, r, req); err != nil {
			h.log.Warn("bad request", "call", name, "err", err)
			writeJSON(w, http.StatusBadRequest, map[string]string{"Err": fmt.Sprintf("%s: %v", name, err)})
			h.observed(name, start, err)
			return
		}
		resp, err := fn(req)
		h.observed(name, start, err)
		h.log.Debug("api call", "call", name, "duration", time.Since(start), "err", err)
		if err != nil {
			h.log.Info("api call failed", "call", name, "err", err)
			// Both spellings: IPAM readers look for Error, driver ones for Err.
			writeJSON(w, http.StatusOK, map[string]string{a.errField: err.Error(), "Err": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, resp)
	})
}

// noBody adapts a call that takes no request (docker sends an empty body).
func noBody[Resp any](fn func() (Resp, error)) func(*struct{}) (Resp, error) {
	return func(*struct{}) (Resp, error) { return fn() }
}

// noReply adapts a call whose success reply is an empty object.
func noReply[Req any](fn func(*Req) error) func(*Req) (struct{}, error) {
	return func(r *Req) (struct{}, error) { return struct{}{}, fn(r) }
}

func decode(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("request body is larger than %d bytes", MaxBodyBytes)
		}
		return fmt.Errorf("read request: %w", err)
	}
	if len(body) == 0 {
		if _, ok := v.(*struct{}); ok {
			return nil
		}
		return errors.New("empty request body")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode request: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", sdk.DefaultContentTypeV1_1)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (h *Handler) networkRoutes(d network.Driver) {
	a := networkAPI
	route(h, a, "GetCapabilities", noBody(d.GetCapabilities))
	route(h, a, "CreateNetwork", noReply(d.CreateNetwork))
	route(h, a, "AllocateNetwork", d.AllocateNetwork)
	route(h, a, "DeleteNetwork", noReply(d.DeleteNetwork))
	route(h, a, "FreeNetwork", noReply(d.FreeNetwork))
	route(h, a, "CreateEndpoint", d.CreateEndpoint)
	route(h, a, "DeleteEndpoint", noReply(d.DeleteEndpoint))
	route(h, a, "EndpointOperInfo", d.EndpointInfo)
	route(h, a, "Join", d.Join)
	route(h, a, "Leave", noReply(d.Leave))
	route(h, a, "DiscoverNew", noReply(d.DiscoverNew))
	route(h, a, "DiscoverDelete", noReply(d.DiscoverDelete))
	route(h, a, "ProgramExternalConnectivity", noReply(d.ProgramExternalConnectivity))
	route(h, a, "RevokeExternalConnectivity", noReply(d.RevokeExternalConnectivity))
}

func (h *Handler) ipamRoutes(ip ipam.Ipam) {
	a := ipamAPI
	route(h, a, "GetCapabilities", noBody(func() (IPAMCapabilities, error) {
		c, err := ip.GetCapabilities()
		if err != nil {
			return IPAMCapabilities{}, err
		}
		return IPAMCapabilities{RequiresMACAddress: c.RequiresMACAddress}, nil
	}))
	route(h, a, "GetDefaultAddressSpaces", noBody(ip.GetDefaultAddressSpaces))
	route(h, a, "RequestPool", ip.RequestPool)
	route(h, a, "ReleasePool", noReply(ip.ReleasePool))
	route(h, a, "RequestAddress", ip.RequestAddress)
	route(h, a, "ReleaseAddress", noReply(ip.ReleaseAddress))
}
