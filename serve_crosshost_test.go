package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
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
		{endpoints: "http://x:2379", vxlanPort: 0, hostTTL: time.Minute},
		{endpoints: "http://x:2379", vxlanPort: 4789, hostTTL: time.Second},
	} {
		if err := bad.validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if err := (&crossHostFlags{}).validate(); err != nil {
		t.Errorf("no etcd: %v", err)
	}
}

func TestLoadHostID(t *testing.T) {
	dir := t.TempDir()
	id, err := loadHostID(dir)
	if err != nil || len(id) != 16 {
		t.Fatalf("new id %q, %v", id, err)
	}
	again, err := loadHostID(dir)
	if err != nil || again != id {
		t.Fatalf("id not kept: %q then %q (%v)", id, again, err)
	}
	other, _ := loadHostID(t.TempDir())
	if other == id {
		t.Fatal("two state dirs, one id")
	}
	if err := os.WriteFile(filepath.Join(dir, "host-id"), []byte("a/b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadHostID(dir); err == nil {
		t.Fatal("malformed id accepted")
	}
}
