package store

// Group commit. Every bbolt write transaction costs two fdatasyncs (about
// 0.5 ms here), and bbolt runs one writer at a time, so writes from
// concurrent API calls queue behind each other's syncs. The writes that
// queue while one transaction commits go together in the next one: a lone
// writer pays exactly one commit, as before; n queued writers share one.
// Unlike bolt.DB.Batch there is no timer, so nothing ever waits for
// company.
//
// A write that fails must fail alone: when one function of a group returns
// an error, the group's transaction is rolled back and each function runs
// again in its own transaction (bbolt's Batch does the same). Functions may
// therefore run twice and must not have effects outside the transaction.

import (
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

type write struct {
	fn   func(*bolt.Tx) error
	err  error
	done chan struct{}
}

// committer groups writes. The first writer to find no commit running
// becomes the leader: it commits everything queued, and hands the lead to a
// new goroutine if more arrived meanwhile, so it can return its own result.
type committer struct {
	mu      sync.Mutex
	queue   []*write
	leading bool
	groups  atomic.Int64 // transactions committed (tests)
}

// commit runs fn in a write transaction, possibly shared with others, and
// returns its result once that transaction is on disk.
func (db *DB) commit(fn func(*bolt.Tx) error) error {
	w := &write{fn: fn, done: make(chan struct{})}
	c := &db.committer
	c.mu.Lock()
	c.queue = append(c.queue, w)
	lead := !c.leading
	c.leading = true
	c.mu.Unlock()
	if lead {
		db.lead()
	}
	<-w.done
	return w.err
}

// lead commits the queue once, then passes the lead on if the queue filled
// again, or gives it up.
func (db *DB) lead() {
	c := &db.committer
	c.mu.Lock()
	group := c.queue
	c.queue = nil
	c.mu.Unlock()

	db.commitGroup(group)

	c.mu.Lock()
	more := len(c.queue) > 0
	if !more {
		c.leading = false
	}
	c.mu.Unlock()
	if more {
		go db.lead()
	}
}

func (db *DB) commitGroup(group []*write) {
	db.committer.groups.Add(1)
	var failed bool
	err := db.updateTx(func(tx *bolt.Tx) error {
		for _, w := range group {
			if err := w.fn(tx); err != nil {
				failed = true
				return err
			}
		}
		return nil
	})
	if failed && len(group) > 1 {
		// Find the culprit: everyone on their own.
		for _, w := range group {
			w.err = db.updateTx(w.fn)
			close(w.done)
		}
		return
	}
	for _, w := range group {
		w.err = err
		close(w.done)
	}
}

// updateTx runs fn in a bbolt write transaction and, once that is on disk,
// writes its id to the commit mark (identity.go).
func (db *DB) updateTx(fn func(*bolt.Tx) error) error {
	var id int
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		id = tx.ID()
		return fn(tx)
	})
	if err == nil {
		db.mark.write(db.origin.Identity, uint64(id))
	}
	return err
}
