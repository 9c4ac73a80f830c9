package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Address block claims.
//
// A host claims a block of a pool with a key in its own range,
// hostblocks/<host>/<pool>/<block> (its copy), on its lease, written in one
// transaction with blocks/<pool>/<block> = <host>. Only the host can write
// its range (admin.go), while blocks/ is every host's to write; so the
// copies decide, and blocks/ is a name others may forge:
//
//   - the holder of a block is the host whose copy is the oldest (lowest
//     creation revision, which no writer chooses). A host may write a copy
//     of its own for another's block, but it is newer and loses; it cannot
//     delete or rewrite another's copy. A block with no copy has no holder;
//     rewriting or deleting blocks/ changes nothing of who holds it.
//   - a claim succeeds only if no copy of the block exists: it lists every
//     copy (hostblocks/, keys only) and writes on condition that the
//     block's blocks/ key is as listed (a rival for the block writes it
//     too, so only one of them commits, and claims of other blocks never
//     conflict). A third host may have deleted that key right after a
//     rival's claim, or written a copy alone; so the claimant then reads
//     the copies created between its listing and its claim, and if one is
//     of the block, it is older: the claimant's goes again (confirmClaim).
//   - copies go with the holder's lease, as its endpoint records do: a host
//     whose lease lapsed (cut off longer than the TTL) holds nothing, and a
//     host that comes back after another took its block sees that one as
//     holder. A block whose blocks/ key names another host still needs that
//     host gone (no host record, no endpoint copies) before it is claimed,
//     the rule from before copies: it keeps the blocks of hosts of the
//     version before (which write no copy) while they live, and those of a
//     host back from a lapse until it has claimed them again (keepBlocks).
//
// A claim whose transaction fails lists again, from the failed
// transaction's answer, and tries again: the block is then held, or its
// blocks/ key changed under it.

// claimAttempts bounds the rounds of one claim: each failed round means
// another claim committed (or someone keeps writing blocks/ keys).
const claimAttempts = 16

// blockCopy is one host's claim of a block, as listed.
type blockCopy struct {
	host   string
	create int64 // creation revision: the oldest copy holds the block
	lease  int64
}

// blockName is a block's blocks/ key, as listed (host "": there is none).
type blockName struct {
	host string
	mod  int64
}

// blockView is one listing of a pool's blocks, at revision rev.
type blockView struct {
	rev    int64
	copies map[netip.Prefix][]blockCopy // oldest first
	names  map[netip.Prefix]blockName
}

// blockView decodes a listing of pool: its blocks/ keys (names) and the
// keys under hostblocks/ (copies, of every pool). Malformed keys are
// returned for the caller to log.
func (k keys) blockView(pool string, rev int64, names, copies []*mvccpb.KeyValue) (blockView, []string) {
	v := blockView{rev: rev, copies: map[netip.Prefix][]blockCopy{}, names: map[netip.Prefix]blockName{}}
	var bad []string
	for _, kv := range names {
		b, err := unescapePrefix(strings.TrimPrefix(string(kv.Key), k.blocks(pool)))
		if err != nil {
			bad = append(bad, string(kv.Key))
			continue
		}
		v.names[b] = blockName{host: string(kv.Value), mod: kv.ModRevision}
	}
	for _, kv := range copies {
		host, p, b, err := k.parseHostBlock(string(kv.Key))
		if err != nil {
			bad = append(bad, string(kv.Key))
			continue
		}
		if p == pool {
			v.copies[b] = append(v.copies[b], blockCopy{host: host, create: kv.CreateRevision, lease: kv.Lease})
		}
	}
	for _, cs := range v.copies {
		slices.SortFunc(cs, func(x, y blockCopy) int {
			return cmp.Or(cmp.Compare(x.create, y.create), strings.Compare(x.host, y.host))
		})
	}
	return v, bad
}

// parseHostBlock splits hostblocks/<host>/<pool>/<block>.
func (k keys) parseHostBlock(key string) (host, pool string, b netip.Prefix, err error) {
	parts := strings.Split(strings.TrimPrefix(key, k.allHostBlocks()), "/")
	if len(parts) != 3 || !validSegment(parts[0]) || !validSegment(parts[1]) {
		return "", "", netip.Prefix{}, fmt.Errorf("block claim key %s: want hostblocks/<host>/<pool>/<block>", key)
	}
	b, err = unescapePrefix(parts[2])
	return parts[0], parts[1], b, err
}

// holders is what HeldBlocks reports: each block's holder, and "" for a
// block named in blocks/ that no copy backs.
func (v blockView) holders() map[netip.Prefix]string {
	out := make(map[netip.Prefix]string, len(v.names))
	for b := range v.names {
		out[b] = ""
	}
	for b, cs := range v.copies {
		out[b] = cs[0].host
	}
	return out
}

// claimStep is what a claim of a block has to do, from a listing.
type claimStep int

const (
	claimRefused claimStep = iota // another host's copy is the oldest
	claimDone                     // this host's copy holds it, on its lease, and blocks/ names it
	claimKeep                     // this host's copy holds it: move it to the lease, name it again
	claimFree                     // no copy: claim it
)

type claimPlan struct {
	step claimStep
	own  blockCopy // claimKeep: this host's copy
	name blockName // the blocks/ key as listed
}

// planClaim decides a claim of b by host me on lease from v.
func planClaim(v blockView, me string, b netip.Prefix, lease int64) claimPlan {
	name := v.names[b]
	cs := v.copies[b]
	switch {
	case len(cs) == 0:
		return claimPlan{step: claimFree, name: name}
	case cs[0].host != me:
		return claimPlan{step: claimRefused, name: name}
	case cs[0].lease == lease && name.host == me:
		return claimPlan{step: claimDone, name: name}
	}
	return claimPlan{step: claimKeep, own: cs[0], name: name}
}

// namedOther is the host blocks/ names for a free block when it is not
// the claimant: its claim stands while it lives.
func (p claimPlan) namedOther(me string) string {
	if p.step != claimFree || p.name.host == me {
		return ""
	}
	return p.name.host
}

// blockState is what the client keeps of its block claims.
type blockState struct {
	mu     sync.Mutex
	keptOn clientv3.LeaseID // the lease keepBlocks last ran on
	warned map[string]bool  // newer copies already logged
	// last is the last listing of each pool and when it was taken: the
	// allocator claims right after it lists, and a claim made from a
	// listing is exact however old it is (it fails if any claim was
	// created since), so a fresh one is not read twice.
	last map[string]timedView
}

type timedView struct {
	v  blockView
	at time.Time
}

// listingReuse is how old a listing a claim starts from may be: an older
// one would more often fail the claim's compare, a transaction lost.
const listingReuse = time.Second

// remember keeps v as the last listing of pool.
func (s *blockState) remember(pool string, v blockView) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil || len(s.last) > 100 {
		s.last = map[string]timedView{}
	}
	s.last[pool] = timedView{v: v, at: time.Now()}
}

// forget drops the listing of pool: this host changed its claims.
func (s *blockState) forget(pool string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.last, pool)
}

// recent returns the listing of pool taken within listingReuse, if any.
func (s *blockState) recent(pool string) (blockView, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tv, ok := s.last[pool]
	return tv.v, ok && time.Since(tv.at) < listingReuse
}

// blockListOps read a pool's blocks in one revision.
func (c *Client) blockListOps(pool string) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpGet(c.k.blocks(pool), clientv3.WithPrefix()),
		clientv3.OpGet(c.k.allHostBlocks(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	}
}

// viewFrom decodes the answers of blockListOps at rev.
func (c *Client) viewFrom(pool string, rev int64, rs []*etcdserverpb.ResponseOp) blockView {
	v, bad := c.k.blockView(pool, rev, rs[0].GetResponseRange().Kvs, rs[1].GetResponseRange().Kvs)
	for _, key := range bad {
		c.log.Warn("etcd: ignoring malformed address block key", "key", key)
	}
	return v
}

func (c *Client) listBlocks(ctx context.Context, pool string) (blockView, error) {
	resp, err := c.etcd().Txn(ctx).Then(c.blockListOps(pool)...).Commit()
	if err != nil {
		return blockView{}, c.blockErr("list address blocks of pool "+pool, err)
	}
	v := c.viewFrom(pool, resp.Header.Revision, resp.Responses)
	c.blk.remember(pool, v)
	return v, nil
}

// blockErr classifies a failed etcd call on blocks: a refused permission
// names the fix; anything else is etcd not answering.
func (c *Client) blockErr(what string, err error) error {
	if errors.Is(err, rpctypes.ErrPermissionDenied) {
		return fmt.Errorf("%s: %w: this host's etcd user may not write its address block claims under %s: run vxbridge cluster add-host --host-id %s again, which grants that range",
			what, err, c.k.hostBlocks(c.host), c.host)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
}

// HeldBlocks returns the address blocks of pool (see PoolKey) and the host
// holding each (the oldest claim of its own); "" for a block claimed by no
// live host: its holder's lease lapsed, or a host of the version before
// claimed it. ClaimBlock says whether such a block can be taken.
func (c *Client) HeldBlocks(ctx context.Context, pool string) (map[netip.Prefix]string, error) {
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	if err := c.awaitStanding(rctx); err != nil {
		return nil, fmt.Errorf("list address blocks of pool %s: %w", pool, err)
	}
	v, err := c.listBlocks(rctx, pool)
	if err != nil {
		return nil, err
	}
	c.noteNewerCopies(pool, v)
	return v.holders(), nil
}

// noteNewerCopies logs, once each, claims written while another host held
// the block: no host does that through ClaimBlock.
func (c *Client) noteNewerCopies(pool string, v blockView) {
	c.blk.mu.Lock()
	defer c.blk.mu.Unlock()
	if c.blk.warned == nil || len(c.blk.warned) > 1000 {
		c.blk.warned = map[string]bool{}
	}
	for b, cs := range v.copies {
		for _, x := range cs[1:] {
			id := fmt.Sprintf("%s/%s/%s@%d", x.host, pool, b, x.create)
			if !c.blk.warned[id] {
				c.blk.warned[id] = true
				c.log.Warn("etcd: a host claims an address block another host holds: not believed (the older claim holds it)",
					"pool", pool, "block", b, "holder", cs[0].host, "claimant", x.host)
			}
		}
	}
}

// ClaimBlock takes block of pool for this host: it succeeds when no host
// holds it (no copy; and the host blocks/ names, if another, is gone: no
// host record, no endpoint copies) or this host does. ok false means
// another host holds it.
func (c *Client) ClaimBlock(ctx context.Context, pool string, block netip.Prefix) (ok bool, err error) {
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	if err := c.awaitStanding(rctx); err != nil {
		return false, fmt.Errorf("claim block %s of pool %s: %w", block, pool, err)
	}
	lease := c.currentLease()
	ok, err = c.claimOn(rctx, pool, block, int64(lease))
	if err != nil && isLeaseGone(err) {
		// The lease lapsed before the publishing loop found out (a host
		// back from a partition): claim on the lease it takes next.
		if err := c.awaitNewLease(rctx, lease); err != nil {
			return false, fmt.Errorf("claim block %s of pool %s: this host's lease expired: %w", block, pool, err)
		}
		ok, err = c.claimOn(rctx, pool, block, int64(c.currentLease()))
	}
	return ok, err
}

// claimOn claims block for this host on lease.
func (c *Client) claimOn(ctx context.Context, pool string, block netip.Prefix, lease int64) (bool, error) {
	if lease == 0 {
		return false, fmt.Errorf("%w: claim block %s of pool %s: this host has no etcd lease", ErrUnavailable, block, pool)
	}
	v, err := c.claimListing(ctx, pool, block, lease)
	if err != nil {
		return false, err
	}
	return c.claimFrom(ctx, pool, block, v, lease)
}

// awaitNewLease waits until this host holds a lease other than gone, with
// its records on it.
func (c *Client) awaitNewLease(ctx context.Context, gone clientv3.LeaseID) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for c.currentLease() == gone {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: no new lease yet: %w", ErrUnavailable, ctx.Err())
		case <-tick.C:
		}
	}
	return c.awaitStanding(ctx)
}

// claimFrom claims block from listing v: a transaction per round, until it
// succeeds or a listing (the failed transaction's answer) shows the block
// held.
func (c *Client) claimFrom(ctx context.Context, pool string, block netip.Prefix, v blockView, lease int64) (bool, error) {
	for range claimAttempts {
		p := planClaim(v, c.host, block, lease)
		switch p.step {
		case claimRefused:
			return false, nil
		case claimDone:
			return true, nil
		}
		r, err := c.tryClaim(ctx, pool, block, p, lease)
		switch {
		case err != nil:
			return false, err
		case r.won && p.step == claimFree:
			return c.confirmClaim(ctx, pool, block, v.rev, r.rev)
		case r.won:
			return true, nil
		}
		if q := planClaim(r.next, c.host, block, lease); q.step == claimFree && q.namedOther(c.host) == p.namedOther(c.host) && r.otherLives {
			return false, nil // the host blocks/ names lives: its claim stands
		}
		v = r.next
	}
	return false, fmt.Errorf("claim block %s of pool %s: other claims kept changing it (%d rounds); try again", block, pool, claimAttempts)
}

// claimListing is the listing a claim starts from: the last second's when
// it leads to a transaction (whose compares make it exact), else a new one
// (a refusal, or a claim already done, is said as of now).
func (c *Client) claimListing(ctx context.Context, pool string, block netip.Prefix, lease int64) (blockView, error) {
	if v, ok := c.blk.recent(pool); ok {
		if step := planClaim(v, c.host, block, lease).step; step == claimFree || step == claimKeep {
			return v, nil
		}
	}
	return c.listBlocks(ctx, pool)
}

// claimTry is the outcome of one claim transaction: won at revision rev,
// or not, with a listing as of then and whether the host blocks/ named
// is alive.
type claimTry struct {
	won        bool
	rev        int64
	next       blockView
	otherLives bool
}

// tryClaim is one transaction of a claim by plan p: this host's claim, on
// condition that blocks/ is as listed (a rival for the block writes it
// too) and, when it names another host, that host is gone; or, for a
// claim of this host's, that it is still the same key.
func (c *Client) tryClaim(ctx context.Context, pool string, block netip.Prefix, p claimPlan, lease int64) (claimTry, error) {
	own, name := c.k.hostBlock(c.host, pool, block), c.k.block(pool, block)
	var conds []clientv3.Cmp
	orElse := c.blockListOps(pool)
	if p.step == claimKeep {
		conds = append(conds, clientv3.Compare(clientv3.CreateRevision(own), "=", p.own.create))
	} else {
		conds = append(conds, clientv3.Compare(clientv3.ModRevision(name), "=", p.name.mod))
		if other := p.namedOther(c.host); other != "" {
			conds = append(conds, clientv3.Compare(clientv3.CreateRevision(c.k.host(other)), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(c.k.hostEndpoints(other)), "=", 0).WithPrefix())
			orElse = append(orElse, clientv3.OpGet(c.k.host(other), clientv3.WithCountOnly()),
				clientv3.OpGet(c.k.hostEndpoints(other), clientv3.WithPrefix(), clientv3.WithCountOnly()))
		}
	}
	tr, err := c.etcd().Txn(ctx).If(conds...).Then(
		clientv3.OpPut(own, "", clientv3.WithLease(clientv3.LeaseID(lease))),
		clientv3.OpPut(name, c.host),
	).Else(orElse...).Commit()
	if err != nil {
		return claimTry{}, c.blockErr(fmt.Sprintf("claim block %s of pool %s", block, pool), err)
	}
	if tr.Succeeded {
		c.blk.forget(pool)
		if other := p.namedOther(c.host); other != "" {
			c.log.Info("etcd: reclaimed address block of a departed host", "pool", pool, "block", block, "from", other)
		}
		return claimTry{won: true, rev: tr.Header.Revision}, nil
	}
	r := claimTry{next: c.viewFrom(pool, tr.Header.Revision, tr.Responses)}
	for _, resp := range tr.Responses[2:] {
		r.otherLives = r.otherLives || resp.GetResponseRange().Count > 0
	}
	return r, nil
}

// confirmClaim checks a claim of block committed at rev from a listing at
// listRev: it holds unless another claim of the block was created in
// between (its blocks/ key deleted meanwhile, or written alone, so the
// transaction's compare could not see it). That one is older: this host's
// claim goes again, and blocks/ names the other.
func (c *Client) confirmClaim(ctx context.Context, pool string, block netip.Prefix, listRev, rev int64) (bool, error) {
	what := fmt.Sprintf("confirm the claim of block %s of pool %s", block, pool)
	resp, err := c.etcd().Get(ctx, c.k.allHostBlocks(), clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithMinCreateRev(listRev+1), clientv3.WithMaxCreateRev(rev-1))
	if err != nil {
		return false, c.blockErr(what, err) // a next claim finds whose is older
	}
	older, at := "", rev
	for _, kv := range resp.Kvs {
		if host, p, b, err := c.k.parseHostBlock(string(kv.Key)); err == nil && p == pool && b == block && kv.CreateRevision < at {
			older, at = host, kv.CreateRevision
		}
	}
	if older == "" {
		return true, nil
	}
	own, name := c.k.hostBlock(c.host, pool, block), c.k.block(pool, block)
	if _, err := c.etcd().Txn(ctx).If(clientv3.Compare(clientv3.Value(name), "=", c.host)).
		Then(clientv3.OpDelete(own), clientv3.OpPut(name, older)).Else(clientv3.OpDelete(own)).Commit(); err != nil {
		return false, c.blockErr(what, err)
	}
	c.log.Warn("etcd: an older claim of the address block was made while this host claimed it, without its blocks/ key: this host's claim withdrawn",
		"pool", pool, "block", block, "holder", older)
	return false, nil
}

// ReleaseBlock gives block back when this host holds it: its copy goes,
// and blocks/ when it names this host.
func (c *Client) ReleaseBlock(ctx context.Context, pool string, block netip.Prefix) error {
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	own, name := c.k.hostBlock(c.host, pool, block), c.k.block(pool, block)
	_, err := c.etcd().Txn(rctx).If(clientv3.Compare(clientv3.Value(name), "=", c.host)).
		Then(clientv3.OpDelete(own), clientv3.OpDelete(name)).
		Else(clientv3.OpDelete(own)).Commit()
	c.blk.forget(pool)
	if err != nil {
		return c.blockErr(fmt.Sprintf("release block %s of pool %s", block, pool), err)
	}
	return nil
}

// keepBlocks runs after each publishing round and acts once per lease. On a
// new lease it moves this host's copies onto it: after a restart within
// the TTL they are on the lease of the run before, which would take them
// with it when it expires, while this host's containers still have
// addresses there. And it claims again the blocks blocks/ names for this
// host that have no copy: its last lease lapsed with them, or a version
// before copies claimed them. What another host took meanwhile stays the
// other's; the allocator finds it lost at its next check
// (ipam/blocks_recheck.go).
func (c *Client) keepBlocks(ctx context.Context) error {
	lease := c.currentLease()
	c.blk.mu.Lock()
	done := lease == 0 || c.blk.keptOn == lease
	c.blk.mu.Unlock()
	if done {
		return nil
	}
	err := c.keepBlocksOn(ctx, lease)
	if errors.Is(err, rpctypes.ErrPermissionDenied) {
		// A role made before hostblocks/ existed: this host's records are
		// published all the same, and each claim says what to run.
		c.log.Error("etcd: this host's address block claims cannot follow its new lease", "err", err)
		err = nil
	}
	if err == nil {
		c.blk.mu.Lock()
		c.blk.keptOn = lease
		c.blk.mu.Unlock()
	}
	return err
}

// keepBlocksOn is keepBlocks' work on lease.
func (c *Client) keepBlocksOn(ctx context.Context, lease clientv3.LeaseID) error {
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	resp, err := c.etcd().Txn(rctx).Then(clientv3.OpGet(c.k.hostBlocks(c.host), clientv3.WithPrefix()),
		clientv3.OpGet(c.k.allBlocks(), clientv3.WithPrefix())).Commit()
	if err != nil {
		return c.blockErr("read this host's address block claims", err)
	}
	copies := resp.Responses[0].GetResponseRange().Kvs
	again, err := c.moveCopies(rctx, copies, lease)
	if err != nil {
		return err
	}
	again = append(again, c.k.namedWithoutCopy(c.host, resp.Responses[1].GetResponseRange().Kvs, copies)...)
	for _, x := range again {
		ok, err := c.ClaimBlock(ctx, x.pool, x.block)
		if err != nil {
			return err
		}
		c.log.Info("etcd: address block of this host claimed again on its new lease", "pool", x.pool, "block", x.block, "claimed", ok)
	}
	return nil
}

type poolBlock struct {
	pool  string
	block netip.Prefix
}

// moveCopies puts this host's copies on lease, each only while it is the
// same key (a copy that went meanwhile is not made again here: it is
// returned, to be claimed again).
func (c *Client) moveCopies(ctx context.Context, copies []*mvccpb.KeyValue, lease clientv3.LeaseID) ([]poolBlock, error) {
	var gone []poolBlock
	for _, kv := range copies {
		if clientv3.LeaseID(kv.Lease) == lease {
			continue
		}
		_, pool, b, err := c.k.parseHostBlock(string(kv.Key))
		if err != nil {
			continue // not one this host writes
		}
		tr, err := c.etcd().Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(string(kv.Key)), "=", kv.CreateRevision)).
			Then(clientv3.OpPut(string(kv.Key), "", clientv3.WithLease(lease))).Commit()
		if err != nil {
			return nil, c.blockErr(fmt.Sprintf("keep the claim of block %s of pool %s on the new lease", b, pool), err)
		}
		if !tr.Succeeded {
			gone = append(gone, poolBlock{pool, b})
		}
	}
	return gone, nil
}

// namedWithoutCopy lists the blocks that names (blocks/ keys) give to host
// while copies (its hostblocks/ keys) hold no claim of them.
func (k keys) namedWithoutCopy(host string, names, copies []*mvccpb.KeyValue) []poolBlock {
	have := map[string]bool{}
	for _, kv := range copies {
		have[strings.TrimPrefix(string(kv.Key), k.hostBlocks(host))] = true
	}
	var out []poolBlock
	for _, kv := range names {
		rest := strings.TrimPrefix(string(kv.Key), k.allBlocks())
		pool, b, ok := strings.Cut(rest, "/")
		blk, err := unescapePrefix(b)
		if string(kv.Value) != host || !ok || err != nil || have[rest] {
			continue
		}
		out = append(out, poolBlock{pool, blk})
	}
	return out
}
