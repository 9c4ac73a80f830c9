package main

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/ownership"
	"github.com/vxbridge/vxbridge/store"
)

func TestParseServeFlagsDefaultsAndEnv(t *testing.T) {
	cfg, err := parseServeFlags(nil, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.socket != "/run/docker/plugins/vxbridge.sock" || cfg.stateDir != "/var/lib/vxbridge" || cfg.logLevel != slog.LevelInfo || cfg.reconcileInterval != 10*time.Second {
		t.Errorf("defaults = %+v", cfg)
	}
	env := map[string]string{"VXBRIDGE_STATE_DIR": "/srv/vx", "VXBRIDGE_LOG_LEVEL": "debug", "VXBRIDGE_SOCKET": "/x/a.sock"}
	cfg, err = parseServeFlags([]string{"--socket", "/y/b.sock"}, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.stateDir != "/srv/vx" || cfg.logLevel != slog.LevelDebug || cfg.socket != "/y/b.sock" {
		t.Errorf("env + flags = %+v", cfg)
	}
}

func TestParseServeFlagsRefusals(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	for _, args := range [][]string{{"--log-level", "loud"}, {"--nope"}, {"extra"}} {
		if _, err := parseServeFlags(args, none, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

func TestRunVersionAndUsage(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "vxbridge ") {
		t.Errorf("version: %q, %v", out.String(), err)
	}
	if err := run(nil, io.Discard, io.Discard); err == nil {
		t.Error("no command accepted")
	}
	if err := run([]string{"frobnicate"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "frobnicate") {
		t.Errorf("unknown command: %v", err)
	}
}

func TestParseServeFlagsWaysOut(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	cfg, err := parseServeFlags([]string{ownership.FlagAdopt}, none, io.Discard)
	if err != nil || !cfg.adopt || cfg.purge {
		t.Errorf("%s: %+v %v", ownership.FlagAdopt, cfg, err)
	}
	cfg, err = parseServeFlags(nil, func(k string) (string, bool) { return "true", k == "VXBRIDGE_PURGE_FOREIGN" }, io.Discard)
	if err != nil || cfg.adopt || !cfg.purge {
		t.Errorf("VXBRIDGE_PURGE_FOREIGN: %+v %v", cfg, err)
	}
}

func TestForwardingNeeded(t *testing.T) {
	v6net := store.Network{IPv6: []store.Subnet{{}}}
	for _, tc := range []struct {
		nets   []store.Network
		v4, v6 bool
	}{
		{nil, false, false},
		{[]store.Network{{Internal: true}, {Internal: true, IPv6: v6net.IPv6}}, false, false},
		{[]store.Network{{Internal: true}, {}}, true, false},
		{[]store.Network{{}, v6net}, true, true},
	} {
		if v4, v6 := forwardingNeeded(tc.nets); v4 != tc.v4 || v6 != tc.v6 {
			t.Errorf("%+v: %v %v, want %v %v", tc.nets, v4, v6, tc.v4, tc.v6)
		}
	}
}
