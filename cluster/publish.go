package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Backoff bounds of the background loops' retries.
const (
	minBackoff = 100 * time.Millisecond
	// maxBackoff is short: after etcd returns, a host must renew its lease
	// well within the TTL etcd grants leases again on restart.
	maxBackoff = time.Second
)

func nextBackoff(b time.Duration) time.Duration { return min(max(2*b, minBackoff), maxBackoff) }

// Run keeps this host's lease alive and its host, endpoint and membership
// records in etcd equal to what SetHost, Publish and Withdraw said, until
// ctx ends. It never gives up: while etcd is unreachable it retries with
// backoff; when the lease is lost (etcd was away longer than the TTL) it
// takes a new one and writes everything again.
func (c *Client) Run(ctx context.Context) {
	k := &leaseKeeper{c: c, r: retrier{c: c, ctx: ctx}, stopKA: func() {}}
	defer func() { k.stopKA() }()
	resync := time.NewTicker(c.ttl)
	defer resync.Stop()
	full := true
	for {
		switch k.ensureLease(ctx) {
		case quit:
			return
		case again:
			continue
		}
		err := c.syncOnce(ctx, full)
		if err == nil {
			err = c.keepBlocks(ctx) // block claims follow the lease (blocks.go)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isLeaseGone(err) {
				c.leaseGone()
			}
			if k.retry("publishing this host's records failed", err) == quit {
				return
			}
			continue
		}
		k.r.ok()
		full = false
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-resync.C: // repairs records someone deleted behind our back
			full = true
		case <-k.lost:
			k.resume, k.lost = true, nil
		}
	}
}

// runStep says how a round of Run goes on.
type runStep int

const (
	proceed runStep = iota // the lease is held: publish
	again                  // a retry has waited: start the round over
	quit                   // ctx ended
)

// leaseKeeper is Run's hold on the lease: the keep-alive of the lease and
// whether it ended (lost), so that the same lease is tried again (resume)
// before a new one.
type leaseKeeper struct {
	c      *Client
	r      retrier
	lost   <-chan struct{}
	stopKA context.CancelFunc
	resume bool
}

// ensureLease makes sure a lease is held and kept alive: the same one again
// after its keep-alive ended, else a new one.
func (k *leaseKeeper) ensureLease(ctx context.Context) runStep {
	select {
	case <-k.lost:
		k.resume, k.lost = true, nil
	default:
	}
	if k.resume {
		if step := k.resumeLease(ctx); step != proceed {
			return step
		}
	}
	if k.c.currentLease() != 0 {
		return proceed
	}
	lease, ch, stop, err := k.c.grant(ctx)
	if err != nil {
		return k.retry("no host lease yet", err)
	}
	k.keep(ch, stop)
	k.c.setLease(lease)
	k.c.noteRenewed(time.Now())
	k.c.log.Info("etcd: host lease granted", "lease", fmt.Sprintf("%x", lease), "ttl", k.c.ttl)
	return proceed
}

// resumeLease takes up the lease whose keep-alive ended, or notes it gone.
func (k *leaseKeeper) resumeLease(ctx context.Context) runStep {
	ch, stop, err := k.c.resume(ctx)
	switch {
	case err == nil:
		k.keep(ch, stop)
		k.resume = false
		k.c.log.Info("etcd: host lease kept alive again", "lease", fmt.Sprintf("%x", k.c.currentLease()))
	case isLeaseGone(err):
		k.c.log.Warn("etcd: host lease expired (etcd unreachable longer than the TTL); taking a new one")
		k.c.leaseGone()
		k.resume = false
	default:
		return k.retry("host lease not renewed", err)
	}
	return proceed
}

// keep replaces the keep-alive by a new one.
func (k *leaseKeeper) keep(lost <-chan struct{}, stop context.CancelFunc) {
	k.stopKA()
	k.lost, k.stopKA = lost, stop
}

func (k *leaseKeeper) retry(what string, err error) runStep {
	if k.r.retry(what, err) {
		return again
	}
	return quit
}

// retrier waits between Run's attempts: a backoff up to maxBackoff, but a
// TTL while the host id is live elsewhere (that lasts until an operator
// acts, and is logged as an error once, not every second).
type retrier struct {
	c       *Client
	ctx     context.Context
	backoff time.Duration
	inUse   string // the last HostIDInUseError logged
}

func (r *retrier) retry(what string, err error) bool {
	if errors.Is(err, rpctypes.ErrPermissionDenied) {
		err = fmt.Errorf("%w: this host's etcd user may not write host %s's records: give the host its identity (vxbridge cluster add-host --host-id %s)",
			err, r.c.host, r.c.host)
	}
	r.c.recordRound(fmt.Errorf("%s: %w", what, err))
	var inUse *HostIDInUseError
	if errors.As(err, &inUse) {
		if msg := err.Error(); msg != r.inUse {
			r.inUse = msg
			r.c.log.Error("etcd: this host refuses to publish its records", "err", err)
		}
		return sleep(r.ctx, r.c.ttl)
	}
	r.backoff = nextBackoff(r.backoff)
	r.c.log.Warn("etcd: "+what+"; retrying", "err", err, "in", r.backoff)
	return sleep(r.ctx, r.backoff)
}

func (r *retrier) ok() {
	if r.inUse != "" {
		r.c.log.Info("etcd: the host id is this host's again; publishing")
	}
	r.backoff, r.inUse = 0, ""
}

// resume renews the current lease once and, if etcd still has it, keeps it
// alive again. The client library ends a keep-alive when etcd has been
// unreachable for a TTL, but a restarted etcd gives every lease a fresh TTL:
// taking up the same lease keeps this host's records, so peers never see
// them vanish and come back.
func (c *Client) resume(ctx context.Context) (<-chan struct{}, context.CancelFunc, error) {
	lease := c.currentLease()
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	if _, err := c.etcd().KeepAliveOnce(rctx, lease); err != nil {
		return nil, nil, err
	}
	c.noteRenewed(time.Now())
	return c.keepAlive(ctx, lease)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func isLeaseGone(err error) bool {
	return err == rpctypes.ErrLeaseNotFound || strings.Contains(err.Error(), rpctypes.ErrLeaseNotFound.Error())
}

func (c *Client) currentLease() clientv3.LeaseID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lease
}

// setLease records a new lease, or none (0). Either way the epoch moves:
// blocks confirmed under the old lease must be confirmed again (LeaseEpoch).
func (c *Client) setLease(l clientv3.LeaseID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l != c.lease {
		c.epoch++
	}
	c.lease = l
	if l != 0 {
		c.written = nil // a new lease: read back and check the host id first
	}
	if l == 0 {
		c.synced = 0 // everything must be written again
		c.renewed = time.Time{}
	}
}

// leaseGone: etcd answered that this host's lease no longer exists.
func (c *Client) leaseGone() {
	c.setLease(0)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answered = time.Now()
}

// grant takes a lease and starts keeping it alive; lost is closed when the
// keep-alive ends (lease expired or revoked).
func (c *Client) grant(ctx context.Context) (clientv3.LeaseID, <-chan struct{}, context.CancelFunc, error) {
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	resp, err := c.etcd().Grant(rctx, int64(c.ttl.Round(time.Second)/time.Second))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("grant lease: %w", err)
	}
	lost, stop, err := c.keepAlive(ctx, resp.ID)
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.ID, lost, stop, nil
}

// keepAlive keeps lease alive until stop; lost is closed when it ends.
func (c *Client) keepAlive(ctx context.Context, lease clientv3.LeaseID) (lost <-chan struct{}, stop context.CancelFunc, err error) {
	kctx, stop := context.WithCancel(ctx)
	ka, err := c.etcd().KeepAlive(kctx, lease)
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("keep lease alive: %w", err)
	}
	ch := make(chan struct{})
	go func() {
		for range ka {
			c.noteRenewed(time.Now())
		}
		close(ch)
	}()
	return ch, stop, nil
}

// snapshot is what this host's records should be.
type snapshot struct {
	gen     uint64
	lease   clientv3.LeaseID
	self    Host
	eps     map[string]Endpoint
	members map[uint32]bool
	written map[string]keyValue // what the last round left in etcd (nil: read it)
	touched map[uint32]bool     // networks this client wrote records of
}

func (c *Client) snapshot() snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return snapshot{gen: c.gen, lease: c.lease, self: c.self, eps: maps.Clone(c.eps), members: maps.Clone(c.members),
		written: c.written, touched: maps.Clone(c.touched)}
}

// wantKeys is every key this host's records should have, with its value:
// each network record beside its copy in this host's own range.
func (c *Client) wantKeys(s snapshot) map[string]string {
	want := map[string]string{}
	if !s.self.VTEP.IsValid() {
		return want // nothing to say before the VTEP is known
	}
	want[c.k.host(c.host)] = encode(s.self)
	member := c.memberRecord(s.self)
	for vni := range s.members {
		want[c.k.membership(c.host, vni)] = member
		want[c.k.netMember(vni, c.host)] = member
	}
	for id, ep := range s.eps {
		if s.members[ep.VNI] {
			rec := encode(ep)
			want[c.k.netEndpoint(ep.VNI, c.host, id)] = rec
			want[c.k.endpoint(c.host, id)] = rec
		}
	}
	return want
}

func (c *Client) memberRecord(self Host) string {
	return encode(Member{Host: c.host, VTEP: self.VTEP, Port: self.Port})
}

// syncOnce makes this host's keys in etcd (host record, member and
// endpoint records and their copies) equal the snapshot, all on the
// current lease. It writes only what changed since the last round; full
// (and the first round, and every round after an error) reads this host's
// keys back from etcd first, so what someone deleted behind its back
// returns, and checks that the host id is not live on another host.
func (c *Client) syncOnce(ctx context.Context, full bool) error {
	s := c.snapshot()
	if s.lease == 0 {
		return fmt.Errorf("no lease")
	}
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	have := s.written
	if full || have == nil {
		var err error
		if have, err = c.ownKeys(rctx, s); err != nil {
			c.forgetWritten()
			return err
		}
		if err := c.checkHostKey(have, s); err != nil {
			c.forgetWritten()
			c.setStanding(err)
			return err
		}
	}
	txns, next := planWrites(c.k, c.wantKeys(s), have, s.lease)
	guard := c.hostGuard(have, s)
	for _, ops := range txns {
		resp, err := c.etcd().Txn(rctx).If(guard...).Then(ops...).Commit()
		if err != nil {
			c.forgetWritten()
			return fmt.Errorf("write host records: %w", err)
		}
		if !resp.Succeeded {
			c.forgetWritten()
			return errHostKeyChanged
		}
		guard = c.leaseGuard(s)
	}
	c.finishRound(s, next)
	return nil
}

// finishRound records a successful round.
func (c *Client) finishRound(s snapshot, next map[string]keyValue) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rounds++
	c.lastErr = nil
	c.written = next
	c.noteStandingLocked(s.lease, nil)
	for vni := range s.members {
		c.touched[vni] = true
	}
	for vni := range c.touched {
		if !s.members[vni] && !c.members[vni] {
			delete(c.touched, vni) // its keys went in this round
		}
	}
	if c.lease == s.lease && c.synced != s.gen {
		c.synced = s.gen
		close(c.syncedC)
		c.syncedC = make(chan struct{})
	}
}

// planWrites returns the transactions that turn have into want on lease,
// and what etcd then holds. A network record and its copy in this host's
// own range always go in one transaction (readers compare the two at one
// revision: verify.go), the host record in the first.
func planWrites(k keys, want map[string]string, have map[string]keyValue, lease clientv3.LeaseID) ([][]clientv3.Op, map[string]keyValue) {
	units := map[string][]clientv3.Op{}
	next := make(map[string]keyValue, len(want))
	for key, val := range want {
		if kv, ok := have[key]; !ok || string(kv.Value) != val || clientv3.LeaseID(kv.Lease) != lease {
			units[k.unit(key)] = append(units[k.unit(key)], clientv3.OpPut(key, val, clientv3.WithLease(lease)))
		}
		next[key] = keyValue{Value: []byte(val), Lease: int64(lease)}
	}
	for key := range have {
		if _, ok := want[key]; !ok {
			units[k.unit(key)] = append(units[k.unit(key)], clientv3.OpDelete(key))
		}
	}
	names := slices.Sorted(maps.Keys(units)) // "h" (the host record) sorts first
	var txns [][]clientv3.Op
	var cur []clientv3.Op
	for _, name := range names {
		if len(cur)+len(units[name]) > maxTxnOps {
			txns, cur = append(txns, cur), nil
		}
		cur = append(cur, units[name]...)
	}
	if len(cur) > 0 {
		txns = append(txns, cur)
	}
	return txns, next
}

// unit names the record a key of this host belongs to: a network record
// and its copy share one ("e/<ep>", "m/<vni>"), the host record is "h".
func (k keys) unit(key string) string {
	parts := strings.Split(strings.TrimPrefix(key, k.prefix+"/"), "/")
	switch {
	case parts[0] == "hosts":
		return "h"
	case len(parts) == 3 && parts[0] == "endpoints":
		return "i/e/" + parts[2]
	case len(parts) == 3 && parts[0] == "memberships":
		return "i/m/" + parts[2]
	case len(parts) == 4 && parts[0] == "net" && parts[2] == "members":
		return "i/m/" + parts[1]
	case len(parts) == 5 && parts[0] == "net" && parts[2] == "eps":
		return "i/e/" + parts[4]
	}
	return "k/" + key
}

func (c *Client) forgetWritten() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.written = nil
}

type keyValue struct {
	Value  []byte
	Lease  int64
	ModRev int64 // as read by ownKeys; 0 in what a round wrote
}

// ownKeys returns this host's keys in etcd: its host record, its
// memberships and endpoint copies, and its member and endpoint records in
// every network it has or had. It reads only this host's own records,
// never another host's.
func (c *Client) ownKeys(ctx context.Context, s snapshot) (map[string]keyValue, error) {
	ops := []clientv3.Op{clientv3.OpGet(c.k.host(c.host)), clientv3.OpGet(c.k.hostEndpoints(c.host), clientv3.WithPrefix()),
		clientv3.OpGet(c.k.memberships(c.host), clientv3.WithPrefix())}
	vnis := maps.Clone(s.touched)
	if vnis == nil {
		vnis = map[uint32]bool{}
	}
	maps.Copy(vnis, s.members)
	for vni := range vnis {
		ops = append(ops, clientv3.OpGet(c.k.netMember(vni, c.host)),
			clientv3.OpGet(c.k.netHostEndpoints(vni, c.host), clientv3.WithPrefix()))
	}
	out := map[string]keyValue{}
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		resp, err := c.etcd().Txn(ctx).Then(ops[:n]...).Commit()
		if err != nil {
			return nil, fmt.Errorf("read host records: %w", err)
		}
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().Kvs {
				out[string(kv.Key)] = keyValue{Value: kv.Value, Lease: kv.Lease, ModRev: kv.ModRevision}
			}
		}
		ops = ops[n:]
	}
	return out, nil
}
