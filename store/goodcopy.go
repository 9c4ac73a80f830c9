package store

// The last good copy.
//
// A start-up that found the state file sound and the kernel matching it
// writes a consistent copy beside it (bbolt's own copy of one read
// transaction), vxbridge.db.good, replacing the previous one atomically.
// When the file is later found damaged, Restore puts that copy in its place
// (keeping the damaged file) and records the rollback in it: the records
// made since the copy are lost, and the kernel objects they held must not
// be taken for leftovers (see identity.go). The copy is small (the file's
// live pages) and costs one write per start.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Info describes a state file or a copy of one.
type Info struct {
	Path     string
	Identity string // "" in a file from before identities
	Commit   uint64 // bbolt's transaction id
	Records  int    // networks, endpoints and pools
	Size     int64
	Modified time.Time
	Notes    []string // damage bbolt works around
}

// Inspect checks the bbolt file at path as Open would and reads its
// identity, commit and record count, read-only. A file a running vxbridge
// holds fails with ErrLocked.
func Inspect(path string) (info Info, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return Info{}, err
	}
	info = Info{Path: path, Size: st.Size(), Modified: st.ModTime()}
	if st.Size() == 0 {
		return info, fmt.Errorf("%s: %w: the file is empty", path, ErrDamaged)
	}
	fc, err := checkFile(path)
	if err != nil {
		return info, err
	}
	info.Notes = fc.notes
	defer guard(path, &err)()
	b, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, berrors.ErrTimeout) {
		return info, lockedError(path)
	}
	if err != nil {
		return info, fmt.Errorf("open %s: %w", path, err)
	}
	defer b.Close()
	err = b.View(func(tx *bolt.Tx) error {
		if err := consistent(tx); err != nil {
			return fmt.Errorf("%s: %w: %w", path, ErrDamaged, err)
		}
		info.Commit = uint64(tx.ID())
		if f := tx.Bucket(bucketFile); f != nil {
			info.Identity = string(f.Get(keyIdentity))
		}
		for _, name := range [][]byte{bucketNetworks, bucketEndpoints, bucketPools} {
			if b := tx.Bucket(name); b != nil {
				info.Records += b.Stats().KeyN
			}
		}
		return nil
	})
	return info, err
}

// SaveGoodCopy writes a consistent copy of the state file beside it
// (vxbridge.db.good), replacing the last one atomically. Call it once a
// start-up found the file sound and the kernel's objects its own. It
// refuses while a rollback is unresolved: the file may then hold less than
// the copy. A copy of another state file (another identity) is kept aside
// as vxbridge.db.good.<identity>.
func (db *DB) SaveGoodCopy() error {
	if r := db.Origin().Rollback; r != "" {
		return fmt.Errorf("last good copy kept: the state file went back in time (%s)", r)
	}
	good := db.path + GoodSuffix
	if old, err := Inspect(good); err == nil && old.Identity != db.Identity() && old.Identity != "" {
		if err := os.Rename(good, good+"."+old.Identity); err != nil {
			return fmt.Errorf("keep the good copy of state %s: %w", old.Identity, err)
		}
	}
	tmp := good + ".tmp"
	err := db.bolt.View(func(tx *bolt.Tx) error { return writeFile(tmp, tx.WriteTo) })
	if err == nil {
		err = os.Rename(tmp, good)
	}
	if err == nil {
		err = syncDir(filepath.Dir(good))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write the good copy %s: %w", good, err)
	}
	return nil
}

// writeFile creates path with what write writes, on disk when it returns.
func writeFile(path string, write func(io.Writer) (int64, error)) (retErr error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err := f.Close(); retErr == nil {
			retErr = err
		}
	}()
	if _, err := write(f); err != nil {
		return err
	}
	return f.Sync()
}

// Restored is what Restore did.
type Restored struct {
	From Info   // the good copy now in place
	Kept string // where the file it replaced went ("" when there was none)
}

// Restore puts the last good copy of dir's state file in its place. The
// file it replaces, damaged or not, is kept as
// vxbridge.db.before-restore-<time>. The restored file records that it went
// back in time, so the next start deletes nothing its lost records may have
// held. No vxbridge may run on dir meanwhile (ErrLocked).
func Restore(dir string, lockTimeout time.Duration) (Restored, error) {
	path := filepath.Join(dir, FileName)
	from, err := Inspect(path + GoodSuffix)
	if err != nil {
		return Restored{}, fmt.Errorf("no usable good copy: %w", err)
	}
	out := Restored{From: from}
	if st, err := os.Stat(path); err == nil && st.Size() > 0 {
		if out.Kept, err = setAside(path, lockTimeout); err != nil {
			return out, err
		}
	}
	tmp := path + ".tmp"
	err = writeFile(tmp, func(w io.Writer) (int64, error) { return copyFrom(w, from.Path) })
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(tmp)
		return out, fmt.Errorf("put %s in place of %s: %w", from.Path, path, err)
	}
	db, err := Open(dir, Options{LockTimeout: lockTimeout})
	if err != nil {
		return out, err
	}
	defer db.Close()
	return out, db.setRollback(fmt.Sprintf("restored from the good copy written %s (commit %d)",
		from.Modified.UTC().Format(time.RFC3339), from.Commit))
}

// setAside renames the state file at path, under its lock, to
// path.before-restore-<time>.
func setAside(path string, lockTimeout time.Duration) (string, error) {
	unlock, err := lockFile(path, lockTimeout)
	if err != nil {
		return "", fmt.Errorf("stop vxbridge before restoring: %w", err)
	}
	defer unlock()
	kept := path + ".before-restore-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(path, kept); err != nil {
		return "", fmt.Errorf("keep %s: %w", path, err)
	}
	return kept, nil
}

func copyFrom(w io.Writer, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.Copy(w, f)
}
