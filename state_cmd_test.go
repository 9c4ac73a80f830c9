package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/server"
	"github.com/vxbridge/vxbridge/store"
)

// A second `vxbridge serve` on a socket another instance serves, with
// another state directory, fails in under 5 s with exit code 4, before it
// opens any state; the first keeps serving.
func TestServeRefusesSecondInstance(t *testing.T) {
	dir, err := os.MkdirTemp("", "vxmain-") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "vx.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})
	go func() {
		done <- server.ServeUnix(ctx, server.Options{Path: socket, Handler: ok, Logger: slog.New(slog.DiscardHandler)})
	}()
	defer func() { cancel(); <-done }()
	waitAnswer(t, socket)

	otherState := filepath.Join(dir, "other-state")
	start := time.Now()
	err = run([]string{"serve", "--socket", socket, "--state-dir", otherState}, io.Discard, io.Discard)
	took := time.Since(start)
	if !errors.Is(err, server.ErrAnotherInstance) || exitCode(err) != exitAnotherInstance || took > 5*time.Second {
		t.Fatalf("second serve: %v after %v (exit code %d); want another instance named within 5 s", err, took, exitCode(err))
	}
	t.Logf("refused after %v: %v", took.Round(time.Millisecond), err)
	if _, err := os.Stat(otherState); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused instance touched its state dir: %v", err)
	}
	waitAnswer(t, socket)
}

func waitAnswer(t *testing.T, socket string) {
	t.Helper()
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
	}}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := c.Get("http://x/")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing serves %s: %v", socket, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// `vxbridge state check` and `restore`, on a state file cut short.
func TestStateCheckAndRestore(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"n1", "n2"} {
		if err := db.SaveNetwork(&store.Network{ID: id, Options: map[string]string{"pad": strings.Repeat("x", 3000)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.SaveGoodCopy(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	var out bytes.Buffer
	if err := run([]string{"state", "check", "--state-dir", dir}, &out, io.Discard); err != nil || strings.Count(out.String(), "sound;") != 2 {
		t.Fatalf("check of a sound file: %v\n%s", err, out.String())
	}
	path := filepath.Join(dir, store.FileName)
	st, _ := os.Stat(path)
	if err := os.Truncate(path, st.Size()/2); err != nil {
		t.Fatal(err)
	}

	out.Reset()
	err = run([]string{"state", "check", "--state-dir", dir}, &out, io.Discard)
	if exitCode(err) != exitDamagedState || !strings.Contains(err.Error(), "vxbridge state restore --state-dir "+dir) {
		t.Errorf("check of a file cut short: %v (exit code %d)\n%s", err, exitCode(err), out.String())
	}
	out.Reset()
	if err := run([]string{"state", "restore", "--state-dir", dir}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "2 records") || !strings.Contains(out.String(), "before-restore-") {
		t.Errorf("restore said:\n%s", out.String())
	}
	db, err = store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if nets, err := db.Networks(); err != nil || len(nets) != 2 {
		t.Errorf("after restore: %d networks, %v", len(nets), err)
	}
}

func TestStateUsage(t *testing.T) {
	for _, args := range [][]string{{"state"}, {"state", "fix"}, {"state", "check", "extra"}, {"state", "check", "--nope"}} {
		if err := run(args, io.Discard, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
