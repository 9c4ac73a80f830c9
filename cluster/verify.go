package cluster

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Verifying other hosts' records.
//
// A network's prefix is every member's to write, so etcd cannot stop host A
// from writing net/<vni>/eps/B/<ep>, rewriting it, or deleting it. What A
// cannot write is B's own key ranges (endpoints/B/, memberships/B/, with
// per-host etcd identities), where B keeps a copy of each of its network
// records, written in the same transaction. So a reader takes a record of
// another host from the copy: for every version of a network record (each
// watch event, each listed record it has not verified at that revision
// before) it reads the copy at that record's revision, and believes what
// the copy says, with the copy's creation revision (the one that decides
// which of two claims of an address is older). A record the copy does not
// back is refused; a deletion while the copy is still there is not
// believed. Either is reported as Change.Forged. This host's own records
// are taken as they are.
//
// The cost is one point read per record version, batched: one transaction
// per watch response (up to maxTxnOps keys), and for a listing only the
// records not verified at the same revision before, so a relisting after a
// broken watch reads nothing again. Copies are read at the revision of the
// record (a listing's revision for a listing), which makes the check exact:
// a host writes the pair in one transaction, so at any revision the copy
// and the network record agree unless someone else wrote the latter.

// maxTxnOps bounds the operations of one transaction: etcd's default
// --max-txn-ops is 128.
const maxTxnOps = 100

// verifyParallel is how many transactions of copy reads run at once.
const verifyParallel = 4

// ownRecord is a host's own copy of a network record, as read at one
// revision; value nil: there is none.
type ownRecord struct {
	value     []byte
	createRev int64
}

// belief is what the verifier last believed of one network key.
type belief struct {
	netRev int64 // mod revision of the network record verified (0: it was deleted)
	own    ownRecord
}

// verifier verifies one network's records for FollowNetwork (one
// goroutine). seen holds the keys of other hosts whose copy exists.
type verifier struct {
	c    *Client
	vni  uint32
	seen map[string]belief
}

func newVerifier(c *Client, vni uint32) *verifier {
	return &verifier{c: c, vni: vni, seen: map[string]belief{}}
}

// pending is one record version to verify.
type pending struct {
	key    string // the network record's key
	ch     Change // as decoded from the network record
	value  []byte // the network record's value; nil: deleted
	netRev int64  // its mod revision; 0 for a deletion
	readAt int64  // the revision to read the copy at (0: the current one)
	own    ownRecord
	cached bool // own comes from seen: nothing to read
}

// listing verifies a listing of the network at revision rev.
func (v *verifier) listing(ctx context.Context, kvs []*mvccpb.KeyValue, rev int64) (NetworkState, error) {
	st := NetworkState{VNI: v.vni, Rev: rev, Forged: map[string]string{}}
	var todo []*pending
	listed := map[string]bool{}
	for _, kv := range kvs {
		key := string(kv.Key)
		ch, ok := v.decode(key, kv.Value, kv.CreateRevision)
		if !ok {
			continue
		}
		if ch.Host == v.c.host {
			st.add(ch)
			continue
		}
		listed[key] = true
		p := &pending{key: key, ch: ch, value: kv.Value, netRev: kv.ModRevision, readAt: rev}
		if b, ok := v.seen[key]; ok && b.netRev == kv.ModRevision {
			p.own, p.cached = b.own, true
		}
		todo = append(todo, p)
	}
	for key := range v.seen {
		if !listed[key] { // gone from the network: was it its host that deleted it?
			ch, err := v.c.k.decodeNetRecord(v.vni, key, nil, 0)
			if err == nil {
				todo = append(todo, &pending{key: key, ch: ch, readAt: rev})
			}
		}
	}
	if err := v.c.readOwnCopies(ctx, v.vni, todo); err != nil {
		return NetworkState{}, err
	}
	for _, p := range todo {
		ch := v.settle(p)
		st.add(ch)
		if ch.Forged != "" {
			st.Forged[ch.Key()] = ch.Forged
		}
	}
	return st, nil
}

// decode decodes a network record. Another host's record whose value does
// not decode, or disagrees with its key, is checked against the copy like
// any other (and so reported), as a record saying nothing; a key outside
// the layout is skipped.
func (v *verifier) decode(key string, value []byte, createRev int64) (Change, bool) {
	ch, err := v.c.k.decodeNetRecord(v.vni, key, value, createRev)
	if err == nil {
		return ch, true
	}
	if value != nil {
		if byKey, kerr := v.c.k.decodeNetRecord(v.vni, key, nil, 0); kerr == nil && byKey.Host != v.c.host {
			return byKey, true
		}
	}
	v.c.log.Warn("etcd: ignoring a record", "err", err)
	return Change{}, false
}

func (st *NetworkState) add(ch Change) {
	switch ch.Kind {
	case MemberSet:
		st.Members = append(st.Members, ch.Member)
	case EndpointSet:
		st.Endpoints = append(st.Endpoints, ch.Endpoint)
	}
}

// events verifies a watch response's events, in their order.
func (v *verifier) events(ctx context.Context, evs []*clientv3.Event) ([]Change, error) {
	out := make([]Change, 0, len(evs))
	var todo []*pending
	idx := make([]int, 0, len(evs)) // position in out of each pending
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		var val []byte
		var netRev int64
		if ev.Type == clientv3.EventTypePut {
			val, netRev = ev.Kv.Value, ev.Kv.ModRevision
		}
		ch, ok := v.decode(key, val, ev.Kv.CreateRevision)
		if !ok {
			continue
		}
		if ch.Host != v.c.host {
			todo = append(todo, &pending{key: key, ch: ch, value: val, netRev: netRev, readAt: ev.Kv.ModRevision})
			idx = append(idx, len(out))
		}
		out = append(out, ch)
	}
	if err := v.c.readOwnCopies(ctx, v.vni, todo); err != nil {
		return nil, err
	}
	for i, p := range todo {
		out[idx[i]] = v.settle(p)
	}
	return out, nil
}

// recheckRefused is how often records whose deletion was not believed
// (their host's copy was still there) are looked at again: a copy deleted
// after its network record (an operator cleaning up by hand, in that order)
// takes the record away within this time, not at the next listing.
const recheckRefused = 5 * time.Second

// recheckRefused reads, at etcd's current revision, the copies of the
// records whose deletion was refused, and returns the deletions now
// believed: those whose copy is gone too. A record put again meanwhile
// comes with its own watch event, verified at its revision.
func (v *verifier) recheckRefused(ctx context.Context) ([]Change, error) {
	var todo []*pending
	for key, b := range v.seen {
		if b.netRev != 0 {
			continue // the network record is there
		}
		if ch, err := v.c.k.decodeNetRecord(v.vni, key, nil, 0); err == nil {
			todo = append(todo, &pending{key: key, ch: ch})
		}
	}
	if len(todo) == 0 {
		return nil, nil
	}
	if err := v.c.readOwnCopies(ctx, v.vni, todo); err != nil {
		return nil, err
	}
	var out []Change
	for _, p := range todo {
		if p.own.value == nil {
			out = append(out, v.settle(p))
		}
	}
	return out, nil
}

// settle turns a verified record version into what is believed, and
// remembers it.
func (v *verifier) settle(p *pending) Change {
	believed, forged := v.believe(p)
	if believed.Kind == MemberSet || believed.Kind == EndpointSet {
		v.seen[p.key] = belief{netRev: p.netRev, own: p.own}
	} else {
		delete(v.seen, p.key)
	}
	believed.Forged = forged
	return believed
}

// believe is what the host's own copy says of a record, and why the
// network's record is not to be believed ("" when it agrees).
func (v *verifier) believe(p *pending) (Change, string) {
	var believed Change
	if p.own.value != nil {
		ch, err := v.c.k.decodeNetRecord(v.vni, p.key, p.own.value, p.own.createRev)
		if err == nil {
			believed = ch
		} else {
			p.own = ownRecord{} // not a record of this network (another VNI in it)
		}
	}
	if p.own.value == nil {
		believed = p.ch
		if p.ch.Kind == MemberSet || p.ch.Kind == EndpointSet {
			believed = gone(p.ch)
		}
		if p.value != nil {
			return believed, fmt.Sprintf("host %s has no such record of its own", p.ch.Host)
		}
		return believed, ""
	}
	switch {
	case p.value == nil:
		return believed, fmt.Sprintf("deleted, but host %s's own copy is still there", p.ch.Host)
	case !bytes.Equal(p.value, p.own.value):
		return believed, fmt.Sprintf("differs from host %s's own copy", p.ch.Host)
	}
	return believed, ""
}

// readOwnCopies reads the copy of each pending record not cached, at its
// revision, in transactions of up to maxTxnOps reads, verifyParallel at a
// time.
func (c *Client) readOwnCopies(ctx context.Context, vni uint32, todo []*pending) error {
	var reads []*pending
	for _, p := range todo {
		if !p.cached {
			reads = append(reads, p)
		}
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		slots    = make(chan struct{}, verifyParallel)
	)
	for len(reads) > 0 {
		n := min(len(reads), maxTxnOps)
		batch := reads[:n]
		reads = reads[n:]
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			if err := c.readCopyBatch(ctx, vni, batch); err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return firstErr
}

func (c *Client) readCopyBatch(ctx context.Context, vni uint32, batch []*pending) error {
	ops := make([]clientv3.Op, len(batch))
	for i, p := range batch {
		ops[i] = clientv3.OpGet(c.k.ownCopy(vni, p.ch), clientv3.WithRev(p.readAt))
	}
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	resp, err := c.etcd().Txn(rctx).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("read the hosts' own copies of network %d's records: %w", vni, err)
	}
	c.copyReads.Add(uint64(len(batch)))
	for i, r := range resp.Responses {
		if kvs := r.GetResponseRange().Kvs; len(kvs) == 1 {
			batch[i].own = ownRecord{value: kvs[0].Value, createRev: kvs[0].CreateRevision}
		}
	}
	return nil
}
