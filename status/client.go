package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"
)

// PluginsDir is where docker looks for plugin sockets. A managed plugin's
// socket is PluginsDir/<plugin id>/vxbridge.sock, an unmanaged one's
// PluginsDir/vxbridge.sock.
const PluginsDir = "/run/docker/plugins"

// SocketName is the socket's base name (the driver name).
const SocketName = "vxbridge.sock"

// ErrNoPlugin says no socket of a running vxbridge was found.
var ErrNoPlugin = errors.New("no running vxbridge found")

// Fetch asks the plugin on socket for its Report.
func Fetch(ctx context.Context, socket string) (*Report, error) {
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			DisableKeepAlives: true,
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://plugin"+Path, strings.NewReader("{}"))
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask %s: %w", socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read reply of %s: %w", socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s on %s (a vxbridge older than the status endpoint, or not vxbridge): %s",
			socket, resp.Status, Path, strings.TrimSpace(string(body)))
	}
	return Decode(body)
}

// Decode parses a Report, refusing trailing data and unknown shapes.
func Decode(b []byte) (*Report, error) {
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode status: %w", err)
	}
	return &r, nil
}

// Candidates lists the sockets a running vxbridge may listen on under dir:
// dir/vxbridge.sock (unmanaged) and dir/*/vxbridge.sock (managed plugins,
// one folder per plugin id).
func Candidates(dir string) []string {
	var out []string
	if m, _ := filepath.Glob(filepath.Join(dir, SocketName)); len(m) > 0 {
		out = append(out, m...)
	}
	m, _ := filepath.Glob(filepath.Join(dir, "*", SocketName))
	return append(out, m...)
}

// Find returns the one socket under dir where a vxbridge answers the status
// call. Several answering (two plugins enabled) is an error listing them, so
// the caller picks one with --socket.
func Find(ctx context.Context, dir string) (string, *Report, error) {
	cands := Candidates(dir)
	var found []string
	var rep *Report
	var errs []error
	for _, s := range cands {
		r, err := Fetch(ctx, s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		found = append(found, s)
		rep = r
	}
	switch len(found) {
	case 1:
		return found[0], rep, nil
	case 0:
		if len(cands) == 0 {
			return "", nil, fmt.Errorf("%w: no %s in %s or %s/*/ (give --socket PATH)", ErrNoPlugin, SocketName, dir, dir)
		}
		return "", nil, fmt.Errorf("%w: %w", ErrNoPlugin, errors.Join(errs...))
	default:
		return "", nil, fmt.Errorf("several vxbridge plugins answer: %s (choose one with --socket)", strings.Join(found, ", "))
	}
}
