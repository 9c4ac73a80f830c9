package names

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// How a container's name is sought after Join. Docker's embedded DNS in the
// sandbox can name the container only once docker has set the sandbox up
// and registered the name, some hundreds of ms after Join. The name is
// wanted on other hosts as soon as docker can give it, so for the first
// learnFast the question is asked again every learnEvery (one small UDP
// exchange in the sandbox); after that with a backoff up to learnMax, for
// at most learnFor.
const (
	learnEvery = 5 * time.Millisecond
	learnFast  = 2 * time.Second
	learnMax   = time.Second
	learnFor   = 60 * time.Second
	queryWait  = 500 * time.Millisecond // one answer of docker's embedded DNS
	// queryFast is how long one question waits during learnFast. Until
	// docker has registered the name, it forwards the PTR question to the
	// container's upstream resolvers and answers only when they do: a
	// question that waited for a slow upstream (measured: 500 ms and more,
	// once in 40 starts) delayed the next one, which docker could have
	// answered itself meanwhile. Docker answers a name it knows in well
	// under a millisecond.
	queryFast = 50 * time.Millisecond
)

// nextWait is the pause before asking again, since seeking began and
// after pausing last: flat every for the first fast, then doubling up to
// most.
func nextWait(since, last, every, fast, most time.Duration) time.Duration {
	if since < fast {
		return every
	}
	return min(max(2*last, every), most)
}

// ErrNoSandbox marks a sandbox that cannot be entered (not yet, gone, or
// not visible, as in a managed plugin's mount namespace).
var ErrNoSandbox = errors.New("sandbox not found")

// openFor is how long a sandbox not found is looked for again: docker 20.10
// mounts a container's namespace at its SandboxKey only after Join (runc's
// prestart hook calls back into dockerd), so at Join it is not there yet.
// Looking is a stat (and, where docker's mounts are not ours, a walk of
// /proc): every openEvery for the first learnFast, then every openSlow.
const (
	openFor   = 20 * time.Second
	openEvery = 10 * time.Millisecond
	openSlow  = 50 * time.Millisecond
)

// Sandbox asks docker's embedded DNS inside one container's network
// namespace (127.0.0.11).
type Sandbox interface {
	// PTR returns the name docker gives addr: "<container>.<network>".
	PTR(ctx context.Context, addr netip.Addr) (string, error)
	// Resolves says whether docker resolves name to addr.
	Resolves(ctx context.Context, name string, addr netip.Addr) bool
	Close() error
}

// Learner learns the names of joined containers, each in a goroutine of
// its own, never on the path of a docker call.
type Learner struct {
	open func(sandbox string) (Sandbox, error)
	log  *slog.Logger
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu   sync.Mutex
	jobs map[string]*job // by endpoint id
}

type job struct {
	sandbox string
	cancel  context.CancelFunc
}

// NewLearner returns a Learner that enters sandboxes with open (nil: the
// kernel's, OpenSandbox).
func NewLearner(open func(string) (Sandbox, error), log *slog.Logger) *Learner {
	if open == nil {
		open = OpenSandbox
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Learner{open: open, log: log, ctx: ctx, stop: stop, jobs: map[string]*job{}}
}

// Learn seeks the name of endpoint id's container, whose address is addr,
// in sandbox, and hands it to found: the container's name and the
// network's ("web", "xnet": the split of docker's PTR answer). It returns at once. An endpoint
// already sought in the same sandbox (found, given up, or under way) is
// not sought again until Forget.
func (l *Learner) Learn(id, sandbox string, addr netip.Addr, found func(name, domain string)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if j := l.jobs[id]; j != nil {
		if j.sandbox == sandbox {
			return
		}
		j.cancel()
	}
	ctx, cancel := context.WithTimeout(l.ctx, learnFor)
	l.jobs[id] = &job{sandbox: sandbox, cancel: cancel}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer cancel()
		l.seek(ctx, id, sandbox, addr, found)
	}()
}

// Forget stops seeking endpoint id's name.
func (l *Learner) Forget(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if j := l.jobs[id]; j != nil {
		j.cancel()
		delete(l.jobs, id)
	}
}

// Close stops every search and waits for them.
func (l *Learner) Close() {
	l.stop()
	l.wg.Wait()
}

// seek asks until docker answers, with backoff, for at most learnFor.
func (l *Learner) seek(ctx context.Context, id, sandbox string, addr netip.Addr, found func(name, domain string)) {
	sb, err := l.openSoon(ctx, sandbox)
	if err != nil {
		if ctx.Err() != nil {
			return // forgotten (the endpoint left) or closing
		}
		l.log.Warn("names: container name not learned: its network namespace cannot be entered", "endpoint", id, "sandbox", sandbox, "err", err)
		return
	}
	defer sb.Close()
	start, wait := time.Now(), time.Duration(0)
	var lastErr error
	for asked := 1; ; asked++ {
		limit := queryWait
		if time.Since(start) < learnFast {
			limit = queryFast
		}
		ptr, err := ask(ctx, limit, func(ctx context.Context) (string, error) { return sb.PTR(ctx, addr) })
		if err == nil && ptr != "" {
			name, domain := split(ctx, sb, ptr, addr)
			l.log.Debug("names: container name learned", "endpoint", id, "name", name, "domain", domain,
				"asked", asked, "after", time.Since(start), "last_err", lastErr)
			found(name, domain)
			return
		}
		lastErr = err
		wait = nextWait(time.Since(start), wait, learnEvery, learnFast, learnMax)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				l.log.Warn("names: docker's DNS never named the container; other hosts will not resolve it", "endpoint", id,
					"address", addr, "sought_for", learnFor, "err", err)
			}
			return
		case <-t.C:
		}
	}
}

// openSoon opens sandbox, trying again for up to openFor while it fails:
// not found yet, and any other failure too (a socket in a namespace docker
// is still setting up may fail once, and giving up would leave the
// container nameless on every other host for good).
func (l *Learner) openSoon(ctx context.Context, sandbox string) (Sandbox, error) {
	start, wait := time.Now(), time.Duration(0)
	for {
		sb, err := l.open(sandbox)
		if err == nil || time.Since(start) > openFor {
			return sb, err
		}
		wait = nextWait(time.Since(start), wait, openEvery, learnFast, openSlow)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

func ask(ctx context.Context, limit time.Duration, q func(context.Context) (string, error)) (string, error) {
	qctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	return q(qctx)
}

// split cuts docker's PTR answer "<container>.<network>" in two. Both names
// may hold dots; docker itself tells them apart by knowing its networks,
// so with more than one dot each cut is tried, the longest container name
// first, until docker resolves it to addr. Without a dot the answer is the
// container name alone.
func split(ctx context.Context, sb Sandbox, ptr string, addr netip.Addr) (name, domain string) {
	ptr = strings.TrimSuffix(ptr, ".")
	cuts := cutsOf(ptr)
	if len(cuts) <= 1 {
		if len(cuts) == 0 {
			return ptr, ""
		}
		return ptr[:cuts[0]], ptr[cuts[0]+1:]
	}
	for _, i := range cuts {
		qctx, cancel := context.WithTimeout(ctx, queryWait)
		ok := sb.Resolves(qctx, ptr[:i], addr)
		cancel()
		if ok {
			return ptr[:i], ptr[i+1:]
		}
	}
	i := cuts[len(cuts)-1]
	return ptr[:i], ptr[i+1:]
}

// cutsOf lists the positions of ptr's dots, last first.
func cutsOf(ptr string) []int {
	var out []int
	for i := len(ptr) - 1; i > 0; i-- {
		if ptr[i] == '.' {
			out = append(out, i)
		}
	}
	return out
}
