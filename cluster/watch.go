package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Watch calls fn with the cluster's view (hosts and endpoints) after an
// initial listing and after every batch of changes, until ctx ends. It never
// gives up: when etcd is unreachable it retries, and when its watch falls
// behind a compaction (or breaks for any reason) it lists everything again,
// so fn always sees the whole state, never a stream of deltas it could miss.
// Peers that vanish while this host's own lease is in doubt stay in the view
// until it is settled again (see hold.go). fn owns the View it gets; calls
// of fn never overlap.
func (c *Client) Watch(ctx context.Context, fn func(View)) {
	hold := newDepartureHold(c.host, fn, c.log.Warn)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.releaseHeld(ctx, hold) }()
	defer wg.Wait()
	deliver := func(v View) { hold.update(v, c.settled(time.Now())) }
	var backoff time.Duration
	for ctx.Err() == nil {
		rev, err := c.watchFrom(ctx, deliver)
		if ctx.Err() != nil {
			return
		}
		backoff = nextBackoff(backoff)
		if rev > 0 {
			backoff = 0 // it worked for a while: re-list at once
		}
		c.log.Warn("etcd: peer watch interrupted; listing again", "err", err, "in", backoff)
		if !sleep(ctx, backoff) {
			return
		}
	}
}

// releaseHeld applies held departures once this host is settled.
func (c *Client) releaseHeld(ctx context.Context, hold *departureHold) {
	tick := time.NewTicker(max(c.ttl/10, 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if c.settled(now) {
				hold.release()
			}
		}
	}
}

// watchFrom lists, then watches from the listing's revision. It returns when
// the watch ends, with the last revision it saw (0 if the listing failed).
func (c *Client) watchFrom(ctx context.Context, fn func(View)) (int64, error) {
	view, rev, err := c.list(ctx)
	if err != nil {
		return 0, err
	}
	fn(view.clone())
	return c.follow(ctx, view, rev, fn)
}

// follow applies changes after rev to view, calling fn after each batch.
func (c *Client) follow(ctx context.Context, view View, rev int64, fn func(View)) (int64, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range c.cli.Watch(wctx, c.k.prefix+"/", clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if wr.CompactRevision != 0 {
			return rev, errCompacted(wr.CompactRevision)
		}
		if err := wr.Err(); err != nil {
			return rev, err
		}
		changed := false
		for _, ev := range wr.Events {
			key := string(ev.Kv.Key)
			var val []byte
			if ev.Type == clientv3.EventTypePut {
				val = ev.Kv.Value
			}
			if !c.k.relevant(key) {
				continue
			}
			if err := view.apply(c.k, key, val); err != nil {
				c.log.Warn("etcd: ignoring undecodable record", "err", err)
			}
			changed = true
		}
		rev = wr.Header.Revision
		if changed {
			fn(view.clone())
		}
	}
	return rev, ctx.Err()
}

type errCompacted int64

func (e errCompacted) Error() string {
	return fmt.Sprintf("watch fell behind compaction at revision %d", int64(e))
}

// list reads every host and endpoint record at one revision.
func (c *Client) list(ctx context.Context) (View, int64, error) {
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	resp, err := c.cli.Txn(rctx).Then(
		clientv3.OpGet(c.k.hosts(), clientv3.WithPrefix()),
		clientv3.OpGet(c.k.endpoints(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return View{}, 0, err
	}
	v := NewView()
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			if err := v.apply(c.k, string(kv.Key), kv.Value); err != nil {
				c.log.Warn("etcd: ignoring undecodable record", "err", err)
			}
		}
	}
	return v, resp.Header.Revision, nil
}

func (k keys) relevant(key string) bool {
	return len(key) > len(k.hosts()) && key[:len(k.hosts())] == k.hosts() ||
		len(key) > len(k.endpoints()) && key[:len(k.endpoints())] == k.endpoints()
}

func (v View) clone() View {
	out := View{Hosts: make(map[string]Host, len(v.Hosts)), Endpoints: make(map[string]Endpoint, len(v.Endpoints))}
	for k, h := range v.Hosts {
		out.Hosts[k] = h
	}
	for k, e := range v.Endpoints {
		out.Endpoints[k] = e
	}
	return out
}
