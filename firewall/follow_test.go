package firewall

import (
	"errors"
	"io"
	"log/slog"
	"testing"
)

// TestBackendFollower: started on nft before docker made its chains, the
// follower moves to legacy once docker's chains show up there, and stops
// looking.
func TestBackendFollower(t *testing.T) {
	answers := []Detection{
		{Backend: BackendPath, Reason: "no docker chains", Final: false},
		{Backend: BackendLegacy, Reason: "docker's chains are in iptables-legacy", Final: true},
	}
	var switched []Backend
	reconciles := 0
	reconcile := func() error { reconciles++; return nil }
	failSwitch := true
	f := &BackendFollower{
		cur:    Detection{Backend: BackendNFT, Reason: "no docker chains (nft)"},
		detect: func() Detection { d := answers[0]; answers = answers[min(1, len(answers)-1):]; return d },
		switchTo: func(b Backend) error {
			if failSwitch {
				failSwitch = false
				return errors.New("iptables-nft-restore: busy")
			}
			switched = append(switched, b)
			return nil
		},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	f.step(reconcile) // undecided: nothing happens
	if cur := f.Current(); cur.Final || len(switched) > 0 || cur.Backend != BackendNFT {
		t.Fatalf("after an undecided look: switched %v, current %+v", switched, cur)
	}
	f.step(reconcile) // decided, but the switch fails: keep looking
	if cur := f.Current(); cur.Final || cur.Backend != BackendNFT || reconciles != 0 {
		t.Fatalf("after a failed switch: current %+v, reconciles %d", cur, reconciles)
	}
	f.step(reconcile)
	if !f.Current().Final || len(switched) != 1 || switched[0] != BackendLegacy || reconciles != 1 {
		t.Fatalf("after the switch: current %+v, switched %v, reconciles %d", f.Current(), switched, reconciles)
	}
	if cur := f.Current(); cur.Backend != BackendLegacy || cur.Reason != "docker's chains are in iptables-legacy" {
		t.Errorf("current after the switch: %+v", cur)
	}
}

// TestBackendFollowerSame: docker's chains turn up where we already are.
func TestBackendFollowerSame(t *testing.T) {
	f := &BackendFollower{
		cur: Detection{Backend: BackendNFT},
		detect: func() Detection {
			return Detection{Backend: BackendNFT, Reason: "found", Final: true}
		},
		switchTo: func(Backend) error { t.Error("switched to the backend in use"); return nil },
		log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	f.step(func() error { t.Error("reconciled for nothing"); return nil })
	if cur := f.Current(); cur != (Detection{Backend: BackendNFT, Reason: "found", Final: true}) {
		t.Errorf("current %+v", cur)
	}
}
