package store

// The identity of a state file, and knowing when it went back in time.
//
// Every state file carries a random identity, written when the file is
// made (or, for a file from before identities, when it is first opened).
// The kernel objects a vxbridge makes from a state file are meant to carry
// it (link aliases, rule comments), so that a vxbridge deletes only what its
// own state file made: objects of a lost, replaced or other state file carry
// another identity and are left alone. It is 12 hex digits: short enough
// for an alias (IFLA_IFALIAS, 255 bytes, already holding a 64-digit docker
// id) and an iptables comment (256), long enough (48 bits) that two state
// files of one host never share one.
//
// A file can also go back in time under the same identity: bbolt falls back
// to the older meta page when the newer is damaged, losing the last commit,
// and an operator may put an older copy in place (the last good copy, a
// backup). Records the file lost then look, to a reconciler, like objects
// nobody claims. So every commit also writes its bbolt transaction id to a
// side file, vxbridge.db.commit (no fsync: after a power loss it may lag
// behind, which hides a rollback but never invents one); Open compares it
// with the file's own. A rollback found is written into the file, so that
// it stays known across restarts, until the start-up that found it is
// resolved (AcceptRollback).
//
// Start-up (the driver's, see package ownership) reads Origin before any
// reconcile: a file just made or empty while the kernel holds vxbridge
// objects is refused or adopted, a rolled-back one deletes nothing it cannot
// prove is unclaimed.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/vxbridge/vxbridge/ownership/mark"
)

// IdentityLen is the length of a state file's identity (hex digits).
const IdentityLen = mark.IdentityLen

// ValidIdentity says whether s has the form of a state file's identity.
func ValidIdentity(s string) bool { return mark.ValidIdentity(s) }

// bucketFile holds facts about the state file itself (not about docker's
// objects): its identity and an unresolved rollback.
var bucketFile = []byte("file")

var (
	keyIdentity = []byte("identity")
	keyRollback = []byte("rollback")
)

// MarkSuffix names the side file holding the last commit's id
// (vxbridge.db.commit).
const MarkSuffix = ".commit"

// Origin is what Open found: everything start-up needs to decide whether the
// kernel's vxbridge objects are this state's.
type Origin struct {
	// Identity is the state file's identity.
	Identity string
	// Created: there was no file, or an empty one (bbolt's "new"), and Open
	// made it.
	Created bool
	// Assigned: the file predates identities and was given one now, so
	// objects carrying no identity were made from it.
	Assigned bool
	// Records counts the networks, endpoints and pools stored.
	Records int
	// Commit is bbolt's transaction id of the file as found.
	Commit uint64
	// Rollback, when set, says how the file went back in time: found now,
	// or at an earlier start and not yet accepted.
	Rollback string
	// Replaced is the identity the commit mark named when it is another
	// one: the file in place is not the one the last commits went to.
	Replaced string
	// Notes are damage bbolt works around (a meta page it skips), for a log
	// line.
	Notes []string
}

// Empty says whether the state holds nothing: made now, or no network,
// endpoint or pool stored.
func (o Origin) Empty() bool { return o.Created || o.Records == 0 }

// Identity is the state file's identity.
func (db *DB) Identity() string { return db.origin.Identity }

// Origin is what Open found (with Rollback as it stands now).
func (db *DB) Origin() Origin {
	db.originMu.Lock()
	defer db.originMu.Unlock()
	return db.origin
}

// AcceptRollback forgets a rollback Open found, once start-up has dealt with
// it (adopted or removed the objects the lost records held, or found none):
// later starts treat the file as any other.
func (db *DB) AcceptRollback() error { return db.setRollback("") }

// setRollback records why the file went back in time ("": it is resolved).
func (db *DB) setRollback(reason string) error {
	err := db.update("record rollback", func(tx *bolt.Tx) error {
		if reason == "" {
			return tx.Bucket(bucketFile).Delete(keyRollback)
		}
		return tx.Bucket(bucketFile).Put(keyRollback, []byte(reason))
	})
	if err == nil {
		db.originMu.Lock()
		db.origin.Rollback = reason
		db.originMu.Unlock()
	}
	return err
}

func newIdentity() (string, error) {
	b := make([]byte, IdentityLen/2)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make state file identity: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// initFile runs in Open's first transaction: it makes the buckets, reads or
// gives the identity, and notes a rollback against the commit mark.
func (db *DB) initFile(tx *bolt.Tx, existing bool, mark commitMark) error {
	for _, name := range [][]byte{bucketNetworks, bucketEndpoints, bucketPools, bucketAddresses, bucketMeta, bucketFile} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	o := &db.origin
	o.Created = !existing
	o.Commit = uint64(tx.ID() - 1)
	f := tx.Bucket(bucketFile)
	o.Identity = string(f.Get(keyIdentity))
	if o.Identity == "" {
		id, err := newIdentity()
		if err != nil {
			return err
		}
		o.Identity, o.Assigned = id, existing
		if err := f.Put(keyIdentity, []byte(id)); err != nil {
			return err
		}
	}
	for _, name := range [][]byte{bucketNetworks, bucketEndpoints, bucketPools} {
		o.Records += tx.Bucket(name).Stats().KeyN
	}
	return db.noteRollback(f, mark)
}

// noteRollback compares the file with the commit mark and keeps what it
// finds in the file.
func (db *DB) noteRollback(f *bolt.Bucket, mark commitMark) error {
	o := &db.origin
	switch {
	case mark.identity == "":
	case mark.identity != o.Identity:
		o.Replaced = mark.identity
	case mark.txid > o.Commit && f.Get(keyRollback) == nil:
		note := fmt.Sprintf("the file is at commit %d but commit %d had been written: the newer meta page was lost or an older copy was put in place", o.Commit, mark.txid)
		if err := f.Put(keyRollback, []byte(note)); err != nil {
			return err
		}
	}
	o.Rollback = string(f.Get(keyRollback))
	return nil
}

// commitMark is the side file's content: the identity and transaction id
// of the last commit written.
type commitMark struct {
	identity string
	txid     uint64
}

// readMark reads the commit mark at path; a missing or unreadable mark is
// the zero mark (nothing to compare with).
func readMark(path string) commitMark {
	b, err := os.ReadFile(path)
	if err != nil {
		return commitMark{}
	}
	id, n, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	txid, err := strconv.ParseUint(n, 10, 64)
	if !ok || err != nil || !ValidIdentity(id) {
		return commitMark{}
	}
	return commitMark{id, txid}
}

// markWriter keeps the commit mark file open; writes are best effort (no
// fsync, errors dropped): a stale mark hides a rollback, never invents one.
type markWriter struct{ f *os.File }

func openMark(path string) markWriter {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return markWriter{}
	}
	return markWriter{f}
}

// write records txid; the record has a fixed width, so overwriting it in
// place never leaves a longer old one's tail.
func (m markWriter) write(identity string, txid uint64) {
	if m.f != nil {
		_, _ = m.f.WriteAt(fmt.Appendf(nil, "%s %020d\n", identity, txid), 0)
	}
}

func (m markWriter) close() {
	if m.f != nil {
		m.f.Close()
	}
}
