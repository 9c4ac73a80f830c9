package cluster

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Hosts of the versions before records by network write only their host
// record, their endpoints under endpoints/<host>/ and their memberships:
// this host cannot see their endpoints in its networks' records, so
// containers here cannot reach theirs (they can see this host's: it writes
// those keys too). A mixed cluster is refused clearly rather than half
// working in silence: OldHosts lists such hosts, the plugin logs them and
// vxbridge status and doctor show them, until every host runs this
// version (the README's upgrade steps).

// FollowHosts lists the host records, then follows them until ctx ends,
// keeping the ids of live hosts that write the layout before records by
// network. Host records change only when a host comes or goes, so this
// costs little at any size.
func (c *Client) FollowHosts(ctx context.Context) {
	var backoff time.Duration
	for ctx.Err() == nil {
		rev, err := c.followHosts(ctx)
		if ctx.Err() != nil {
			return
		}
		backoff = nextBackoff(backoff)
		if rev > 0 {
			backoff = 0
		}
		c.log.Warn("etcd: host watch interrupted; listing again", "err", err, "in", backoff)
		if !sleep(ctx, backoff) {
			return
		}
	}
}

func (c *Client) followHosts(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	resp, err := c.etcd().Get(rctx, c.k.hosts(), clientv3.WithPrefix())
	cancel()
	if err != nil {
		return 0, err
	}
	old := map[string]bool{}
	for _, kv := range resp.Kvs {
		c.noteHost(old, string(kv.Key), kv.Value)
	}
	c.setOldHosts(old)
	rev := resp.Header.Revision
	wctx, cancelW := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancelW()
	for wr := range c.etcd().Watch(wctx, c.k.hosts(), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if wr.CompactRevision != 0 {
			return rev, errCompacted(wr.CompactRevision)
		}
		if err := wr.Err(); err != nil {
			return rev, err
		}
		for _, ev := range wr.Events {
			var val []byte
			if ev.Type == clientv3.EventTypePut {
				val = ev.Kv.Value
			}
			c.noteHost(old, string(ev.Kv.Key), val)
		}
		c.setOldHosts(old)
		rev = wr.Header.Revision
	}
	return rev, ctx.Err()
}

// noteHost folds one host record into old (value nil: deleted).
func (c *Client) noteHost(old map[string]bool, key string, value []byte) {
	id := strings.TrimPrefix(key, c.k.hosts())
	delete(old, id)
	if value == nil || !validSegment(id) || id == c.host {
		return
	}
	var h Host
	if err := json.Unmarshal(value, &h); err == nil && h.Layout == 0 {
		old[id] = true
	}
}

type oldHosts struct {
	mu  sync.Mutex
	ids []string
}

func (c *Client) setOldHosts(set map[string]bool) {
	ids := make([]string, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	c.old.mu.Lock()
	changed := !slices.Equal(ids, c.old.ids)
	c.old.ids = ids
	c.old.mu.Unlock()
	if changed && len(ids) > 0 {
		c.log.Error("etcd: hosts run an older vxbridge that publishes endpoints by host, not by network: containers here do not reach theirs until they are upgraded",
			"hosts", strings.Join(ids, ","))
	} else if changed {
		c.log.Info("etcd: every live host publishes by network")
	}
}

// OldHosts lists the live hosts that run a version before records by
// network (sorted; empty when there are none).
func (c *Client) OldHosts() []string {
	c.old.mu.Lock()
	defer c.old.mu.Unlock()
	return slices.Clone(c.old.ids)
}
