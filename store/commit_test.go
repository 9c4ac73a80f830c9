package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTest(t *testing.T) *DB {
	t.Helper()
	db, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Writes that queue while a transaction commits share the next one, and a
// write that fails fails alone.
func TestCommitGroupsQueuedWritesAndIsolatesFailures(t *testing.T) {
	db := openTest(t)
	release := make(chan struct{})
	entered := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the leader, held inside its transaction
		defer wg.Done()
		err := db.update("hold", func(tx *bolt.Tx) error {
			close(entered)
			<-release
			return tx.Bucket(bucketMeta).Put([]byte("first"), []byte("1"))
		})
		if err != nil {
			t.Error(err)
		}
	}()
	<-entered
	before := db.committer.groups.Load()
	const n = 20
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.update(fmt.Sprint("write ", i), func(tx *bolt.Tx) error {
				if i == 7 {
					return errors.New("refused")
				}
				return tx.Bucket(bucketMeta).Put([]byte(fmt.Sprint("k", i)), []byte("v"))
			})
		}()
	}
	// Every writer queued behind the held transaction before it ends.
	deadline := time.Now().Add(10 * time.Second)
	for {
		db.committer.mu.Lock()
		queued := len(db.committer.queue)
		db.committer.mu.Unlock()
		if queued == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d writers queued", queued, n)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	for i, err := range errs {
		if (err != nil) != (i == 7) {
			t.Errorf("write %d: err %v", i, err)
		}
	}
	// All n queued writers went as one group (which then failed on write 7
	// and ran its writes one by one).
	if got := db.committer.groups.Load() - before; got != 1 {
		t.Errorf("%d groups after the held one, want 1", got)
	}
	for i := range n {
		v, _ := db.Meta(fmt.Sprint("k", i))
		if (v == "v") != (i != 7) {
			t.Errorf("k%d = %q", i, v)
		}
	}
	if v, _ := db.Meta("first"); v != "1" {
		t.Error("the leader's own write is missing")
	}
}

func TestCommitGroupsWithoutFailure(t *testing.T) {
	db := openTest(t)
	release := make(chan struct{})
	entered := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- db.update("hold", func(tx *bolt.Tx) error {
			close(entered)
			<-release
			return nil
		})
	}()
	<-entered
	before := db.committer.groups.Load()
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := db.SetMeta(fmt.Sprint("k", i), "v"); err != nil {
				t.Error(err)
			}
		}()
	}
	for {
		db.committer.mu.Lock()
		queued := len(db.committer.queue)
		db.committer.mu.Unlock()
		if queued == 10 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := db.committer.groups.Load() - before; got != 1 {
		t.Errorf("10 queued writes took %d transactions, want 1", got)
	}
}
