package main

import (
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/status"
)

// TestBackendWatch: started on nft before docker made its chains, the watch
// moves to legacy once docker's chains show up there, and stops looking.
func TestBackendWatch(t *testing.T) {
	answers := []firewall.Detection{
		{Backend: firewall.BackendPath, Reason: "no docker chains", Final: false},
		{Backend: firewall.BackendLegacy, Reason: "docker's chains are in iptables-legacy", Final: true},
	}
	var switched []firewall.Backend
	reconciles := 0
	failSwitch := true
	w := &backendWatch{
		cur:    status.Firewall{Backend: "nft", Reason: "no docker chains (nft)"},
		detect: func() firewall.Detection { d := answers[0]; answers = answers[min(1, len(answers)-1):]; return d },
		switchTo: func(b firewall.Backend) error {
			if failSwitch {
				failSwitch = false
				return errors.New("iptables-nft-restore: busy")
			}
			switched = append(switched, b)
			return nil
		},
		reconcile: func() error { reconciles++; return nil },
		log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	w.step() // undecided: nothing happens
	if w.isFinal() || len(switched) > 0 || w.Status().Backend != "nft" {
		t.Fatalf("after an undecided look: final %v, switched %v, status %+v", w.isFinal(), switched, w.Status())
	}
	w.step() // decided, but the switch fails: keep looking
	if w.isFinal() || w.Status().Backend != "nft" || reconciles != 0 {
		t.Fatalf("after a failed switch: final %v, status %+v, reconciles %d", w.isFinal(), w.Status(), reconciles)
	}
	w.step()
	if !w.isFinal() || len(switched) != 1 || switched[0] != firewall.BackendLegacy || reconciles != 1 {
		t.Fatalf("after the switch: final %v, switched %v, reconciles %d", w.isFinal(), switched, reconciles)
	}
	if st := w.Status(); st.Backend != "legacy" || st.Reason != "docker's chains are in iptables-legacy" {
		t.Errorf("status after the switch: %+v", st)
	}
}

// TestBackendWatchSame: docker's chains turn up where we already are.
func TestBackendWatchSame(t *testing.T) {
	w := &backendWatch{
		cur: status.Firewall{Backend: "nft"},
		detect: func() firewall.Detection {
			return firewall.Detection{Backend: firewall.BackendNFT, Reason: "found", Final: true}
		},
		switchTo:  func(firewall.Backend) error { t.Error("switched to the backend in use"); return nil },
		reconcile: func() error { t.Error("reconciled for nothing"); return nil },
		log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	w.step()
	if !w.isFinal() || w.Status() != (status.Firewall{Backend: "nft", Reason: "found"}) {
		t.Errorf("status %+v final %v", w.Status(), w.isFinal())
	}
}
