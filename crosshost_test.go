package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/etcdtest"
)

func TestCrossHostFlags(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	cfg, err := parseServeFlags(nil, none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	x := cfg.crossHost
	if x.endpoints != "" || x.vxlanPort != 4789 || x.hostTTL != 20*time.Second || x.prefix != "/vxbridge" {
		t.Fatalf("defaults %+v", x)
	}
	env := map[string]string{"VXBRIDGE_ETCD_ENDPOINTS": "http://192.0.2.1:2379"}
	cfg, err = parseServeFlags([]string{"--vtep-interface", "ul0", "--host-ttl", "5s"},
		func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if x := cfg.crossHost; x.endpoints != "http://192.0.2.1:2379" || x.vtepInterface != "ul0" || x.hostTTL != 5*time.Second {
		t.Fatalf("flags %+v", x)
	}
	for _, bad := range []crossHostFlags{
		{etcdFlags: etcdFlags{endpoints: "http://x:2379"}, vxlanPort: 0, hostTTL: time.Minute},
		{etcdFlags: etcdFlags{endpoints: "http://x:2379"}, vxlanPort: 4789, hostTTL: time.Second},
	} {
		if err := bad.validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if err := (&crossHostFlags{}).validate(); err != nil {
		t.Errorf("no etcd: %v", err)
	}
}

// TestEtcdSecurityFlags: TLS is all on or all off, a user goes with a
// password file and TLS, and each refusal names the flags at odds.
func TestEtcdSecurityFlags(t *testing.T) {
	ca := etcdtest.WriteCerts(t, t.TempDir()).CA
	base := crossHostFlags{vxlanPort: 4789, hostTTL: time.Minute, programming: "eager"}
	for _, c := range []struct {
		name string
		mod  func(f *crossHostFlags)
		want string // "" accepted
	}{
		{"plain http", func(f *crossHostFlags) { f.endpoints = "http://x:2379" }, ""},
		{"http with a CA", func(f *crossHostFlags) { f.endpoints, f.ca = "http://x:2379", ca }, "plain http, but --etcd-ca is set"},
		{"http with a cert", func(f *crossHostFlags) { f.endpoints, f.cert, f.key = "http://x:2379", ca, ca }, "plain http, but --etcd-cert is set"},
		{"http with a user", func(f *crossHostFlags) {
			f.endpoints, f.username, f.passwordFile = "http://x:2379", "u", "/p"
		}, "plain http, but --etcd-username is set"},
		{"https without a CA", func(f *crossHostFlags) { f.endpoints = "https://x:2379" }, "--etcd-ca=system"},
		{"https with the system's roots", func(f *crossHostFlags) { f.endpoints, f.ca = "https://x:2379", "system" }, ""},
		{"https with a CA", func(f *crossHostFlags) { f.endpoints, f.ca = "https://x:2379,https://y:2379", ca }, ""},
		{"mixed schemes", func(f *crossHostFlags) { f.endpoints, f.ca = "https://x:2379,http://y:2379", ca }, "mixes http and https"},
		{"no scheme", func(f *crossHostFlags) { f.endpoints = "x:2379" }, "want URLs"},
		{"user without password", func(f *crossHostFlags) { f.endpoints, f.ca, f.username = "https://x:2379", ca, "u" }, "go together"},
		{"password without user", func(f *crossHostFlags) { f.endpoints, f.ca, f.passwordFile = "https://x:2379", ca, "/p" }, "go together"},
		{"bad vtep cidr", func(f *crossHostFlags) { f.endpoints, f.vtepCIDR = "http://x:2379", "10.0.0.0/33" }, "--vtep-cidr"},
		{"vtep cidrs", func(f *crossHostFlags) { f.endpoints, f.vtepCIDR = "http://x:2379", "10.0.0.0/16, fd00::/64" }, ""},
	} {
		f := base
		c.mod(&f)
		err := f.validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

func TestReadPassword(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if pw, err := readPassword(write("ok", "s3cret\n", 0o600)); err != nil || pw != "s3cret" {
		t.Fatalf("%q %v", pw, err)
	}
	if _, err := readPassword(write("open", "s3cret", 0o644)); err == nil || !strings.Contains(err.Error(), "chmod 0600") {
		t.Fatalf("a password file others can read: %v", err)
	}
	if _, err := readPassword(write("empty", "\n", 0o600)); err == nil {
		t.Fatal("an empty password accepted")
	}
	if _, err := readPassword(filepath.Join(dir, "none")); err == nil {
		t.Fatal("a missing file accepted")
	}
}

func TestCheckHostUser(t *testing.T) {
	for _, c := range []struct {
		user, id string
		ok       bool
	}{{"", "h1", true}, {"vxbridge-host-h1", "h1", true}, {"ops", "h1", true}, {"vxbridge-host-h2", "h1", false}} {
		err := checkHostUser(c.user, c.id, "/var/lib/vxbridge")
		if (err == nil) != c.ok {
			t.Errorf("user %q on host %q: %v", c.user, c.id, err)
		}
		if err != nil && !strings.Contains(err.Error(), "vxbridge cluster add-host --host-id h1") {
			t.Errorf("does not say how to fix it: %v", err)
		}
	}
}
