package store

import (
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestIdentityAndOrigin(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	o := db.Origin()
	if !o.Created || o.Assigned || !o.Empty() || !ValidIdentity(o.Identity) || db.Identity() != o.Identity {
		t.Fatalf("new file: origin %+v", o)
	}
	populate(t, db, "n", 2)
	db.Close()

	db = open(t, dir)
	if got := db.Origin(); got.Created || got.Identity != o.Identity || got.Records != 2 || got.Empty() || got.Commit == 0 {
		t.Errorf("reopened: origin %+v, want identity %s and 2 records", got, o.Identity)
	}
	db.Close()

	// A file from before identities gets one, and says so.
	path := filepath.Join(dir, FileName)
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketFile) }); err != nil {
		t.Fatal(err)
	}
	b.Close()
	os.Remove(path + MarkSuffix)
	db = open(t, dir)
	if got := db.Origin(); !got.Assigned || got.Created || got.Identity == o.Identity || got.Records != 2 {
		t.Errorf("file without identity: origin %+v", got)
	}
	db.Close()
}

// An empty file is new to bbolt, and so to Origin.
func TestEmptyFileIsCreated(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	db := open(t, dir)
	defer db.Close()
	if o := db.Origin(); !o.Created || !o.Empty() {
		t.Errorf("empty file: origin %+v", o)
	}
}

// Another state file put in place: Origin names the one the commits went
// to, and the good copy of that one is kept aside, not overwritten.
func TestReplacedFileAndItsGoodCopy(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	db := open(t, dir)
	first := db.Identity()
	populate(t, db, "first", 2)
	if err := db.SaveGoodCopy(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = open(t, other)
	populate(t, db, "other", 1)
	db.Close()
	if err := os.Rename(filepath.Join(other, FileName), filepath.Join(dir, FileName)); err != nil {
		t.Fatal(err)
	}

	db = open(t, dir)
	defer db.Close()
	if o := db.Origin(); o.Replaced != first || o.Rollback != "" {
		t.Errorf("replaced file: origin %+v, want Replaced %s", o, first)
	}
	if err := db.SaveGoodCopy(); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, FileName+GoodSuffix)
	for path, want := range map[string]string{good: db.Identity(), good + "." + first: first} {
		info, err := Inspect(path)
		if err != nil || info.Identity != want {
			t.Errorf("%s: %+v, %v; want identity %s", path, info, err, want)
		}
	}
}

func TestValidIdentity(t *testing.T) {
	for s, want := range map[string]bool{"0123456789ab": true, "0123456789": false, "0123456789AB": false, "0123456789abc": false, "": false} {
		if ValidIdentity(s) != want {
			t.Errorf("ValidIdentity(%q) = %v", s, !want)
		}
	}
}
