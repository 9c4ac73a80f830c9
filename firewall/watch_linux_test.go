package firewall

import (
	"context"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

func TestKernelWatchChangesSeesIptablesNft(t *testing.T) {
	ns := nstest.New(t)
	other := nstest.New(t)
	changed := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- ns.Do(func() error { return WatchChanges(ctx, func() { changed <- struct{}{} }) })
	}()
	time.Sleep(200 * time.Millisecond) // subscribed by now
	drain := func() int {
		n := 0
		for {
			select {
			case <-changed:
				n++
			case <-time.After(300 * time.Millisecond):
				return n
			}
		}
	}
	run(t, other, "iptables", "-w", "-N", "VXBRIDGE-TEST")
	if n := drain(); n != 0 {
		t.Errorf("%d events from another namespace", n)
	}
	run(t, ns, "iptables", "-w", "-N", "VXBRIDGE-TEST")
	run(t, ns, "iptables", "-w", "-F", "VXBRIDGE-TEST")
	if n := drain(); n == 0 {
		t.Skip("no nf_tables events: iptables here is not iptables-nft")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("WatchChanges after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchChanges did not return after its context ended")
	}
}
