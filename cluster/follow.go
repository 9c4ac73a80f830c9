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
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.releaseHeld(ctx, hold.release) }()
	defer wg.Wait()
	var backoff time.Duration
	for ctx.Err() == nil {
		rev, err := c.followFrom(ctx, vni, hold)
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
func (c *Client) followFrom(ctx context.Context, vni uint32, hold *netHold) (int64, error) {
	st, err := c.listNetwork(ctx, vni)
	if err != nil {
		return 0, err
	}
	c.lists.Add(1)
	hold.reset(st, c.settled(time.Now()))
	return c.followFromRev(ctx, vni, hold, st.Rev)
}

// followFromRev gives hold the network's changes after rev until the watch
// ends, and returns the last revision it saw.
func (c *Client) followFromRev(ctx context.Context, vni uint32, hold *netHold, rev int64) (int64, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range c.cli.Watch(wctx, c.k.netRoot(vni), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if wr.CompactRevision != 0 {
			return rev, errCompacted(wr.CompactRevision)
		}
		if err := wr.Err(); err != nil {
			return rev, err
		}
		c.events.Add(uint64(len(wr.Events)))
		changes := make([]Change, 0, len(wr.Events))
		for _, ev := range wr.Events {
			var val []byte
			if ev.Type == clientv3.EventTypePut {
				val = ev.Kv.Value
			}
			ch, err := c.k.decodeNetRecord(vni, string(ev.Kv.Key), val, ev.Kv.CreateRevision)
			if err != nil {
				c.log.Warn("etcd: ignoring a record", "err", err)
				continue
			}
			changes = append(changes, ch)
		}
		rev = wr.Header.Revision
		if len(changes) > 0 {
			hold.apply(changes, c.settled(time.Now()))
		}
	}
	return rev, ctx.Err()
}

type errCompacted int64

func (e errCompacted) Error() string {
	return fmt.Sprintf("watch fell behind compaction at revision %d", int64(e))
}

// listNetwork reads every record of network vni at one revision.
func (c *Client) listNetwork(ctx context.Context, vni uint32) (NetworkState, error) {
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(rctx, c.k.netRoot(vni), clientv3.WithPrefix())
	if err != nil {
		return NetworkState{}, fmt.Errorf("list network %d: %w", vni, err)
	}
	st := NetworkState{VNI: vni, Rev: resp.Header.Revision}
	for _, kv := range resp.Kvs {
		ch, err := c.k.decodeNetRecord(vni, string(kv.Key), kv.Value, kv.CreateRevision)
		if err != nil {
			c.log.Warn("etcd: ignoring a record", "err", err)
			continue
		}
		switch ch.Kind {
		case MemberSet:
			st.Members = append(st.Members, ch.Member)
		case EndpointSet:
			st.Endpoints = append(st.Endpoints, ch.Endpoint)
		}
	}
	return st, nil
}

// WatchStats counts what this host's network watches received: listings
// and watch events, of every network it follows together.
func (c *Client) WatchStats() (lists, events uint64) {
	return c.lists.Load(), c.events.Load()
}
