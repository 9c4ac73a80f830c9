package server

import (
	"flag"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestEnvName(t *testing.T) {
	if got := EnvName("VXBRIDGE_", "socket-group"); got != "VXBRIDGE_SOCKET_GROUP" {
		t.Errorf("EnvName = %q", got)
	}
}

func TestApplyEnvCommandLineWins(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	sock := fs.String("socket", "default.sock", "")
	level := fs.String("log-level", "info", "")
	every := fs.Duration("reconcile-interval", time.Second, "")
	env := map[string]string{"VXBRIDGE_SOCKET": "env.sock", "VXBRIDGE_LOG_LEVEL": "debug", "VXBRIDGE_RECONCILE_INTERVAL": "5s"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := ApplyEnv(fs, "VXBRIDGE_", lookup); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"--log-level", "warn"}); err != nil {
		t.Fatal(err)
	}
	if *sock != "env.sock" || *level != "warn" || *every != 5*time.Second {
		t.Errorf("socket=%q level=%q interval=%v", *sock, *level, *every)
	}
}

func TestApplyEnvNamesBadValue(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Duration("reconcile-interval", time.Second, "")
	err := ApplyEnv(fs, "VXBRIDGE_", func(k string) (string, bool) { return "soon", k == "VXBRIDGE_RECONCILE_INTERVAL" })
	if err == nil || !strings.Contains(err.Error(), "VXBRIDGE_RECONCILE_INTERVAL") {
		t.Errorf("err = %v, want one naming the variable", err)
	}
}

func TestListenUnixModeAndStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "vx.sock")
	gid := strconv.Itoa(os.Getgid())
	l, err := ListenUnix(path, gid)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // leaves the socket file behind, as a crash would
	if err := os.WriteFile(path+".keep", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err = ListenUnix(path, gid)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer l.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o660 || st.Mode()&os.ModeSocket == 0 {
		t.Errorf("mode = %v, want a 0660 socket", st.Mode())
	}
	if g := st.Sys().(*syscall.Stat_t).Gid; strconv.Itoa(int(g)) != gid {
		t.Errorf("group = %d, want %s", g, gid)
	}
	if _, err := ListenUnix(path, "no-such-group-vx"); err == nil || !strings.Contains(err.Error(), "no-such-group-vx") {
		t.Errorf("unknown group: err = %v", err)
	}
}
