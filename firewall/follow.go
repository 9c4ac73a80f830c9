package firewall

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Following docker's backend. A managed plugin starts before dockerd builds
// its firewall at boot, so Detect may find no docker chains yet. vxbridge
// then starts on the backend `iptables` in PATH runs, and a BackendFollower
// keeps looking: once docker's chains appear in the other backend, or
// docker's nftables tables appear, it moves vxbridge's rules there (a
// packet must pass both backends' FORWARD chains, so ours must sit where
// docker's FORWARD DROP is; in docker's nftables mode there is no such
// policy and vxbridge's own tables go beside docker's). Once it found
// docker's firewall the answer is final: a dockerd restarted with another
// --firewall-backend needs a plugin restart to be followed.

// followPoll is how often an undecided backend is looked at again.
const followPoll = 2 * time.Second

// Open opens the firewall on backend, the --iptables-backend value (auto,
// legacy, nft or path). auto picks the backend holding docker's chains
// (Detect); when docker has not made them yet, it starts on what `iptables`
// in PATH runs and the follower's Follow keeps looking.
func Open(backend string, log *slog.Logger) (*Firewall, *BackendFollower, error) {
	b, err := ParseBackend(backend)
	if err != nil {
		return nil, nil, err
	}
	d := Detection{Backend: b, Reason: "set by --iptables-backend", Final: true}
	if b == "" {
		d = Detect()
		if !d.Final {
			if pb := PathBackend(); pb != BackendPath {
				d.Backend, d.Reason = pb, d.Reason+" ("+string(pb)+")"
			}
		}
	}
	fw, err := NewWithBackend(d.Backend)
	if err != nil {
		return nil, nil, err
	}
	log.Info("firewall backend", "backend", d.Backend, "reason", d.Reason)
	return fw, &BackendFollower{cur: d, detect: Detect, switchTo: fw.SwitchBackend, log: log}, nil
}

// BackendFollower moves the firewall to docker's backend once docker's
// chains show which it is. Its methods are safe for concurrent use.
type BackendFollower struct {
	mu  sync.Mutex
	cur Detection // Final: nothing left to follow

	detect   func() Detection
	switchTo func(Backend) error
	log      *slog.Logger
}

// Current is the backend in use and why (for `vxbridge status`); Final is
// false while the follower still looks for docker's chains.
func (f *BackendFollower) Current() Detection {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur
}

// Follow looks for docker's backend every couple of seconds until the
// answer is final or ctx ends. After moving the rules it calls reconcile,
// which writes them into the new backend.
func (f *BackendFollower) Follow(ctx context.Context, reconcile func() error) {
	t := time.NewTicker(followPoll)
	defer t.Stop()
	for !f.Current().Final {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.step(reconcile)
		}
	}
}

// step looks once.
func (f *BackendFollower) step(reconcile func() error) {
	d := f.detect()
	if !d.Final {
		return
	}
	cur := f.Current()
	if d.Backend != BackendPath && d.Backend != cur.Backend {
		if err := f.switchTo(d.Backend); err != nil {
			f.log.Error("move firewall rules to docker's firewall backend; trying again", "from", cur.Backend, "to", d.Backend, "err", err)
			return
		}
		f.log.Info("firewall backend changed to docker's", "from", cur.Backend, "to", d.Backend, "reason", d.Reason)
		if err := reconcile(); err != nil {
			f.log.Error("write firewall rules into the new backend", "err", err)
		}
		cur.Backend = d.Backend
	}
	f.mu.Lock()
	f.cur = Detection{Backend: cur.Backend, Reason: d.Reason, Final: true}
	f.mu.Unlock()
}
