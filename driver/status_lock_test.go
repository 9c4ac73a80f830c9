package driver

import (
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
)

// Status (the status report, every metrics scrape) does not wait for the
// driver's lock: a network call or a reconcile that holds it, stuck on
// iptables, does not stop it.
func TestStatusDoesNotWaitForTheDriverLock(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	if _, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epID(1),
		Interface: &network.EndpointInterface{Address: "10.10.0.2/24"}}); err != nil {
		t.Fatal(err)
	}
	h.d.mu.Lock() // a reconcile stuck on a held xtables lock
	defer h.d.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		nets, eps, err := h.d.Status()
		if err == nil && (len(nets) != 1 || len(eps) != 1 || !nets[0].Health.OK || !eps[0].Health.OK) {
			t.Errorf("status: %+v %+v", nets, eps)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Status waited for the driver's lock")
	}
}

// A record created or deleted while Status reads is left out, never
// reported without its kernel objects.
func TestInBoth(t *testing.T) {
	id := func(s string) string { return s }
	got := inBoth([]string{"kept", "deleted"}, []string{"kept", "created"}, id)
	if len(got) != 1 || got[0] != "kept" {
		t.Errorf("inBoth = %v, want [kept]", got)
	}
}
