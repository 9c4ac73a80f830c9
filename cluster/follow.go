package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// NetworkSink receives the records of one network from FollowNetwork. Its
// calls never overlap. It owns what it is given.
type NetworkSink interface {
	// Reset replaces everything known of the network: a (re)listing.
	Reset(s NetworkState)
	// Apply folds changes in, in etcd's order.
	Apply(changes []Change)
}

// FollowNetwork lists network vni's records, then follows their changes
// until ctx ends: the sink gets the listing (Reset) and every batch of
// changes after it (Apply). It never gives up: while etcd is unreachable it
// retries, and when its watch falls behind a compaction (or breaks for any
// reason) it lists the network again. A host follows only the networks it
// has: the cost of a change is paid by the hosts of that network alone.
// Peers that vanish while this host's own lease is in doubt are held (see
// hold.go).
func (c *Client) FollowNetwork(ctx context.Context, vni uint32, sink NetworkSink) {
	hold := newNetHold(c.host, sink, c.log.Warn)
	v := newVerifier(c, vni)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.releaseHeld(ctx, hold.release) }()
	defer wg.Wait()
	var backoff time.Duration
	for ctx.Err() == nil {
		rev, err := c.followFrom(ctx, v, hold)
		if ctx.Err() != nil {
			return
		}
		backoff = nextBackoff(backoff)
		if rev > 0 {
			backoff = 0 // it worked for a while: list again at once
		}
		c.log.Warn("etcd: network watch interrupted; listing it again", "vni", vni, "err", err, "in", backoff)
		if !sleep(ctx, backoff) {
			return
		}
	}
}

// releaseHeld applies held departures once this host is settled.
func (c *Client) releaseHeld(ctx context.Context, release func()) {
	tick := time.NewTicker(max(c.ttl/10, 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if c.settled(now) {
				release()
			}
		}
	}
}

// followFrom lists the network, then watches from the listing's revision.
// It returns when the watch ends, with the last revision it saw (0 if the
// listing failed).
func (c *Client) followFrom(ctx context.Context, v *verifier, hold *netHold) (int64, error) {
	st, err := c.listNetwork(ctx, v)
	if err != nil {
		return 0, err
	}
	c.lists.Add(1)
	hold.reset(st, c.settled(time.Now()))
	return c.followFromRev(ctx, v, hold, st.Rev)
}

// followFromRev gives hold the network's changes after rev until the watch
// ends, and returns the last revision it saw.
func (c *Client) followFromRev(ctx context.Context, v *verifier, hold *netHold, rev int64) (int64, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := c.etcd().Watch(wctx, c.k.netRoot(v.vni), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	recheck := time.NewTicker(recheckRefused)
	defer recheck.Stop()
	for {
		var wr clientv3.WatchResponse
		select {
		case <-recheck.C:
			changes, err := v.recheckRefused(ctx)
			if err != nil {
				c.log.Warn("etcd: could not look again at records whose deletion was refused", "vni", v.vni, "err", err)
			}
			if len(changes) > 0 {
				hold.apply(changes, c.settled(time.Now()))
			}
			continue
		case r, ok := <-wch:
			if !ok {
				return rev, ctx.Err()
			}
			wr = r
		}
		if wr.CompactRevision != 0 {
			return rev, errCompacted(wr.CompactRevision)
		}
		if err := wr.Err(); err != nil {
			return rev, err
		}
		c.events.Add(uint64(len(wr.Events)))
		changes, err := v.events(ctx, wr.Events)
		if err != nil {
			return rev, err // a relisting verifies what this response held
		}
		rev = wr.Header.Revision
		if len(changes) > 0 {
			hold.apply(changes, c.settled(time.Now()))
		}
	}
}

type errCompacted int64

func (e errCompacted) Error() string {
	return fmt.Sprintf("watch fell behind compaction at revision %d", int64(e))
}

// listNetwork reads every record of the verifier's network at one
// revision, and verifies them.
func (c *Client) listNetwork(ctx context.Context, v *verifier) (NetworkState, error) {
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	resp, err := c.etcd().Get(rctx, c.k.netRoot(v.vni), clientv3.WithPrefix())
	if err != nil {
		return NetworkState{}, fmt.Errorf("list network %d: %w", v.vni, err)
	}
	return v.listing(ctx, resp.Kvs, resp.Header.Revision)
}

// WatchStats counts what this host's network watches received: listings
// and watch events, of every network it follows together. (Each event of
// another host's record costs one read of its copy: copyReads.)
func (c *Client) WatchStats() (lists, events uint64) {
	return c.lists.Load(), c.events.Load()
}
