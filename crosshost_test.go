package main

import (
	"io"
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
