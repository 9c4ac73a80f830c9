package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// lockFile takes the exclusive flock bbolt takes on path, waiting up to
// timeout, so that a file is checked while no vxbridge writes it. The
// returned function releases it; bbolt then takes it on its own descriptor.
func lockFile(path string, timeout time.Duration) (func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing the descriptor drops its lock
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, lockedError(path)
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func lockedError(path string) error {
	return fmt.Errorf("open %s: %w (is another vxbridge running with --state-dir %s?)", path, ErrLocked, filepath.Dir(path))
}

// GoodSuffix names the last good copy beside the state file
// (vxbridge.db.good).
const GoodSuffix = ".good"

// withGoodCopy adds to the error of a damaged file where its last good copy
// is and how old it is; other errors pass as they are.
func withGoodCopy(path string, err error) error {
	if !errors.Is(err, ErrDamaged) {
		return err
	}
	good := path + GoodSuffix
	st, statErr := os.Stat(good)
	if statErr != nil {
		return fmt.Errorf("%w; there is no good copy (%s)", err, good)
	}
	return fmt.Errorf("%w; the last good copy is %s, written %s", err, good, st.ModTime().UTC().Format(time.RFC3339))
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
