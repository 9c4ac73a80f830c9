// Package server holds the process plumbing of `vxbridge serve`: flags from
// the environment and the unix socket listener.
package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// EnvName is the variable that sets flag name: prefix + NAME with dashes
// as underscores (socket-group -> VXBRIDGE_SOCKET_GROUP).
func EnvName(prefix, name string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// ApplyEnv sets every flag of fs whose variable is set. Call it before
// fs.Parse so the command line wins.
func ApplyEnv(fs *flag.FlagSet, prefix string, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := EnvName(prefix, f.Name)
		if v, ok := lookup(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("environment %s=%q: %w", name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// Options configure ServeUnix.
type Options struct {
	Path    string
	Group   string // owner group of the socket; mode is 0660
	Handler http.Handler
	Logger  *slog.Logger
	// Instance is the claim made at start-up (Claim); nil: ServeUnix
	// claims the socket itself.
	Instance *Instance
	// Timeouts bound what a client may hold; nil: DefaultTimeouts.
	Timeouts *Timeouts
}

// Timeouts bound how long a connection may hold a goroutine of the server
// without progress.
type Timeouts struct {
	ReadHeader time.Duration // from accept (or the last reply) to the end of the headers
	Read       time.Duration // to the end of the body
	Idle       time.Duration // a kept-alive connection between requests
}

// DefaultTimeouts: docker sends small bodies at once, so a stall of
// seconds is a stuck or hostile client.
var DefaultTimeouts = Timeouts{ReadHeader: 10 * time.Second, Read: 30 * time.Second, Idle: 2 * time.Minute}

// ServeUnix serves on a unix socket until ctx ends, then shuts down
// gracefully and removes the socket.
func ServeUnix(ctx context.Context, o Options) error {
	if o.Instance == nil {
		in, err := Claim(ClaimOptions{Socket: o.Path})
		if err != nil {
			return err
		}
		defer in.Release() // after the socket is removed: the next holder's is never
	}
	l, err := ListenUnix(o.Path, o.Group)
	if err != nil {
		return err
	}
	defer os.Remove(o.Path)
	to := DefaultTimeouts
	if o.Timeouts != nil {
		to = *o.Timeouts
	}
	srv := &http.Server{
		Handler: o.Handler,
		// A slow or stuck client must not hold a connection forever.
		ReadHeaderTimeout: to.ReadHeader,
		ReadTimeout:       to.Read,
		IdleTimeout:       to.Idle,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	o.Logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// ListenUnix listens on path with mode 0660 and the named group, replacing
// a stale socket file a crashed instance left behind. A socket some live
// process answers on is never removed (ErrAnotherInstance), nor a file that
// is not a socket.
func ListenUnix(path, group string) (net.Listener, error) {
	gid, err := lookupGroup(group)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chown(path, -1, gid); err != nil {
		l.Close()
		return nil, fmt.Errorf("chown socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket %s: %w", path, err)
	}
	return l, nil
}

// removeStale removes the socket file at path if nothing answers on it.
func removeStale(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if st.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket: remove it or choose another --socket", path)
	}
	if err := refuseServed(path); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

func lookupGroup(name string) (int, error) {
	if name == "root" || name == "" {
		return 0, nil // also where there is no /etc/group (a plugin's rootfs)
	}
	if gid, err := strconv.Atoi(name); err == nil {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("socket group %q: %w", name, err)
	}
	return strconv.Atoi(g.Gid)
}
