package plugin

import (
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/status"
)

func TestObserve(t *testing.T) {
	drv := &fakeDriver{}
	h := New(drv, &fakeIPAM{}, nil)
	type call struct {
		name string
		err  bool
	}
	var mu sync.Mutex
	var got []call
	h.Observe(func(name string, took time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if took < 0 {
			t.Errorf("%s took %v", name, took)
		}
		got = append(got, call{name, err != nil})
	})
	post(t, h, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1"}`)
	post(t, h, "/NetworkDriver.CreateNetwork", `{bad`) // a bad request is an error too
	drv.err = errors.New("boom")
	post(t, h, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1"}`)
	post(t, h, "/Plugin.Activate", "") // not an API call: not observed
	want := []call{{"NetworkDriver.CreateNetwork", false}, {"NetworkDriver.CreateNetwork", true}, {"NetworkDriver.CreateNetwork", true}}
	if len(got) != len(want) {
		t.Fatalf("observed %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("call %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestHandleStatus(t *testing.T) {
	h := New(&fakeDriver{}, &fakeIPAM{}, nil)
	if code, _ := post(t, h, status.Path, "{}"); code != http.StatusNotFound {
		t.Errorf("status path answered %d before HandleStatus", code)
	}
	var fail error
	h.HandleStatus(func() (*status.Report, error) {
		if fail != nil {
			return nil, fail
		}
		return &status.Report{Version: "v7", Networks: []status.Network{{ID: "n1"}}}, nil
	})
	code, out := post(t, h, status.Path, "{}")
	if nets, _ := out["networks"].([]any); code != http.StatusOK || out["version"] != "v7" || len(nets) != 1 {
		t.Errorf("status = %d %v", code, out)
	}
	fail = errors.New("store closed")
	if code, out := post(t, h, status.Path, "{}"); code != http.StatusInternalServerError || out["Err"] != "store closed" {
		t.Errorf("failing status = %d %v", code, out)
	}
	// Docker never learns of it: Activate still lists the two drivers only.
	if _, out := post(t, h, "/Plugin.Activate", ""); len(out["Implements"].([]any)) != 2 {
		t.Errorf("activate = %v", out)
	}
}
