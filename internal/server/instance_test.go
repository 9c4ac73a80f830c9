package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// shortDir is a directory short enough for a socket path (sun_path is 108
// bytes).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vxsrv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// nsName is an abstract socket name of this test alone: tests share the
// machine's network namespace.
func nsName(t *testing.T) string {
	return fmt.Sprintf("vxbridge-test-%d-%s", os.Getpid(), t.Name())
}

// serveFirst runs a server as serve does (claim, then ServeUnix) and waits
// until it answers.
func serveFirst(t *testing.T, socket, ns string) {
	t.Helper()
	in, err := Claim(ClaimOptions{Socket: socket, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "first") })
	go func() {
		done <- ServeUnix(ctx, Options{Path: socket, Handler: h, Logger: slog.New(slog.DiscardHandler), Instance: in})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("first server: %v", err)
		}
		in.Release()
	})
	deadline := time.Now().Add(5 * time.Second)
	for answers(socket) != "first" {
		if time.Now().After(deadline) {
			t.Fatal("first server not up")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// answers is what an HTTP request on socket returns ("" when nothing does).
func answers(socket string) string {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
	}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://x/")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A second instance fails fast, naming the first's pid, on the same socket
// path or in the same network namespace; the first keeps serving on its
// socket.
func TestSecondInstanceFailsFast(t *testing.T) {
	dir, ns := shortDir(t), nsName(t)
	socket := filepath.Join(dir, "vx.sock")
	serveFirst(t, socket, ns)
	pid := "pid " + strconv.Itoa(os.Getpid())
	for name, o := range map[string]ClaimOptions{
		"same socket":                           {Socket: socket},
		"same socket, same namespace":           {Socket: socket, Namespace: ns},
		"another socket, same namespace":        {Socket: filepath.Join(dir, "other.sock"), Namespace: ns},
		"same socket, through ServeUnix":        {},
		"same socket path, written another way": {Socket: dir + "/./vx.sock"},
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			var err error
			if o.Socket == "" {
				err = ServeUnix(context.Background(), Options{Path: socket, Logger: slog.New(slog.DiscardHandler)})
			} else {
				var in *Instance
				if in, err = Claim(o); err == nil {
					in.Release()
				}
			}
			took := time.Since(start)
			t.Logf("refused after %v: %v", took.Round(time.Millisecond), err)
			if took > 5*time.Second {
				t.Errorf("took %v", took)
			}
			if !errors.Is(err, ErrAnotherInstance) || !strings.Contains(err.Error(), pid) {
				t.Errorf("err = %v; want ErrAnotherInstance naming %s", err, pid)
			}
			if got := answers(socket); got != "first" {
				t.Errorf("first server answers %q after the attempt", got)
			}
		})
	}
}

// A socket some other process serves (no lock file: an older vxbridge, or
// anything else) is not removed; a stale one is; a file that is not a
// socket is refused.
func TestListenUnixRemovesOnlyStaleSockets(t *testing.T) {
	dir := shortDir(t)
	live := filepath.Join(dir, "live.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := ListenUnix(live, ""); !errors.Is(err, ErrAnotherInstance) {
		t.Errorf("live socket: %v, want ErrAnotherInstance", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("live socket removed: %v", err)
	}

	stale := filepath.Join(dir, "stale.sock")
	sl, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	sl.(*net.UnixListener).SetUnlinkOnClose(false)
	sl.Close() // the file stays, as after a crash
	l2, err := ListenUnix(stale, "")
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()

	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(file, ""); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v", err)
	}
}

// An instance that exits frees its claims at once, and the next one takes
// them.
func TestClaimAfterRelease(t *testing.T) {
	socket, ns := filepath.Join(shortDir(t), "vx.sock"), nsName(t)
	in, err := Claim(ClaimOptions{Socket: socket, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	in.Release()
	in, err = Claim(ClaimOptions{Socket: socket, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	in.Release()
}
