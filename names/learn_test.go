package names

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeSandbox answers PTR with ptr once asked more than late times, and
// resolves the names in known.
type fakeSandbox struct {
	ptr    string
	late   int32
	known  map[string]bool
	asked  atomic.Int32
	closed atomic.Bool
}

func (s *fakeSandbox) PTR(ctx context.Context, addr netip.Addr) (string, error) {
	if s.asked.Add(1) <= s.late {
		return "", errors.New("NXDOMAIN")
	}
	return s.ptr, nil
}

func (s *fakeSandbox) Resolves(ctx context.Context, name string, addr netip.Addr) bool {
	return s.known[name]
}

func (s *fakeSandbox) Close() error { s.closed.Store(true); return nil }

type result struct {
	mu           sync.Mutex
	name, domain string
	calls        int
	done         chan struct{}
}

func newResult() *result { return &result{done: make(chan struct{}, 8)} }

func (r *result) found(name, domain string) {
	r.mu.Lock()
	r.name, r.domain = name, domain
	r.calls++
	r.mu.Unlock()
	r.done <- struct{}{}
}

func (r *result) wait(t *testing.T) (string, string) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		t.Fatal("no name found")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.name, r.domain
}

var ctrAddr = netip.MustParseAddr("10.90.0.5")

func TestLearnerRetriesUntilDockerHasTheName(t *testing.T) {
	sb := &fakeSandbox{ptr: "web.xnet.", late: 3}
	l := NewLearner(func(string) (Sandbox, error) { return sb, nil }, nil)
	defer l.Close()
	r := newResult()
	l.Learn("e1", "/var/run/docker/netns/1", ctrAddr, r.found)
	if name, domain := r.wait(t); name != "web" || domain != "xnet" {
		t.Fatalf("found %q %q, want web xnet", name, domain)
	}
	if sb.asked.Load() != 4 {
		t.Fatalf("asked %d times, want 4 (3 before docker had it)", sb.asked.Load())
	}
	// Joined again in the same sandbox (a reconcile): not sought again.
	l.Learn("e1", "/var/run/docker/netns/1", ctrAddr, r.found)
	time.Sleep(50 * time.Millisecond)
	if r.calls != 1 || !sb.closed.Load() {
		t.Fatalf("found %d times, sandbox closed %v", r.calls, sb.closed.Load())
	}
}

func TestLearnerForgetStops(t *testing.T) {
	sb := &fakeSandbox{ptr: "web.xnet", late: 1 << 30}
	l := NewLearner(func(string) (Sandbox, error) { return sb, nil }, nil)
	r := newResult()
	l.Learn("e1", "/s", ctrAddr, r.found)
	time.Sleep(30 * time.Millisecond)
	l.Forget("e1")
	done := make(chan struct{})
	go func() { l.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("the search went on after Forget")
	}
}

// TestLearnerWaitsForTheSandbox: docker 20.10 mounts the namespace only
// after Join; the learner looks again until it is there.
func TestLearnerWaitsForTheSandbox(t *testing.T) {
	foundAfterFailedOpens(t, 3, ErrNoSandbox)
}

// TestLearnerRetriesAFailedOpen: a sandbox that is there but cannot be
// used yet (its socket fails while docker sets the namespace up) is tried
// again, not given up for good.
func TestLearnerRetriesAFailedOpen(t *testing.T) {
	foundAfterFailedOpens(t, 2, errors.New("socket in sandbox: connect: network is unreachable"))
}

// foundAfterFailedOpens has opening the sandbox fail with err the first
// failures times, and fails unless the name is found on the next open.
func foundAfterFailedOpens(t *testing.T, failures int32, err error) {
	t.Helper()
	sb := &fakeSandbox{ptr: "web.xnet."}
	var opened atomic.Int32
	l := NewLearner(func(string) (Sandbox, error) {
		if opened.Add(1) <= failures {
			return nil, err
		}
		return sb, nil
	}, nil)
	defer l.Close()
	r := newResult()
	l.Learn("e1", "/var/run/docker/netns/1", ctrAddr, r.found)
	if name, _ := r.wait(t); name != "web" || opened.Load() != failures+1 {
		t.Fatalf("found %q after %d opens, want web after %d", name, opened.Load(), failures+1)
	}
}

func TestLearnerGivesUpOnAMissingSandbox(t *testing.T) {
	l := NewLearner(func(p string) (Sandbox, error) { return nil, ErrNoSandbox }, nil)
	r := newResult()
	l.Learn("e1", "/nowhere", ctrAddr, r.found)
	l.Close() // returns at once: nothing to retry
	if r.calls != 0 {
		t.Fatal("found a name in no sandbox")
	}
}

func TestSplit(t *testing.T) {
	for _, c := range []struct {
		ptr          string
		known        []string
		name, domain string
	}{
		{"web.xnet.", nil, "web", "xnet"},
		{"web", nil, "web", ""},
		{"my.app.xnet", []string{"my.app"}, "my.app", "xnet"},
		{"web.my.net", []string{"web"}, "web", "my.net"},
		{"a.b.c", nil, "a", "b.c"}, // nothing confirmed: the first label
	} {
		sb := &fakeSandbox{known: map[string]bool{}}
		for _, k := range c.known {
			sb.known[k] = true
		}
		name, domain := split(context.Background(), sb, c.ptr, ctrAddr)
		if name != c.name || domain != c.domain {
			t.Errorf("split(%q) = %q %q, want %q %q", c.ptr, name, domain, c.name, c.domain)
		}
	}
}

func TestNextWaitIsFlatThenBacksOff(t *testing.T) {
	const every, fast, most = 5 * time.Millisecond, 2 * time.Second, time.Second
	var last time.Duration
	for since := time.Duration(0); since < fast; since += 300 * time.Millisecond {
		if last = nextWait(since, last, every, fast, most); last != every {
			t.Fatalf("at %v: wait %v, want %v while fast", since, last, every)
		}
	}
	want := []time.Duration{10, 20, 40, 80, 160, 320, 640, 1000, 1000}
	for i, w := range want {
		if last = nextWait(fast+time.Duration(i)*time.Second, last, every, fast, most); last != w*time.Millisecond {
			t.Fatalf("step %d after the fast phase: wait %v, want %v", i, last, w*time.Millisecond)
		}
	}
}

// lateDocker cannot name the container until ready: until then it
// refuses every question at once, or (hang) forwards it to an upstream that
// never answers, as docker does with a PTR it does not know yet.
type lateDocker struct {
	fakeSandbox
	ready time.Time
	hang  bool
}

func (s *lateDocker) PTR(ctx context.Context, addr netip.Addr) (string, error) {
	s.asked.Add(1)
	switch {
	case !time.Now().Before(s.ready):
		return s.ptr, nil
	case s.hang:
		<-ctx.Done()
		return "", ctx.Err()
	}
	return "", errors.New("connection refused")
}

// foundWithin has the learner seek the name in a docker that can give it
// only after late, and fails unless it is found within soon of that.
func foundWithin(t *testing.T, late, soon time.Duration, hang bool) {
	t.Helper()
	sb := &lateDocker{fakeSandbox: fakeSandbox{ptr: "web.xnet."}, ready: time.Now().Add(late), hang: hang}
	l := NewLearner(func(string) (Sandbox, error) { return sb, nil }, nil)
	defer l.Close()
	r := newResult()
	l.Learn("e1", "/var/run/docker/netns/1", ctrAddr, r.found)
	r.wait(t)
	if after := time.Since(sb.ready); after > soon {
		t.Fatalf("name found %v after docker could answer (asked %d times), want within %v", after, sb.asked.Load(), soon)
	}
}

// The name is found within a few ms of docker first answering, even when
// that is most of a second after Join: a backoff that had grown meanwhile
// (5 ms doubling) would wait up to 640 ms more.
func TestLearnerFindsTheNameSoonAfterDockerAnswers(t *testing.T) {
	foundWithin(t, 700*time.Millisecond, 250*time.Millisecond, false)
}

// A question docker forwards to a slow upstream does not hold up the next
// one: the name is found soon after docker can give it, not after the
// question before it timed out (500 ms).
func TestLearnerDoesNotWaitOnASlowForward(t *testing.T) {
	foundWithin(t, 100*time.Millisecond, 200*time.Millisecond, true)
}
