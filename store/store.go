package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the bbolt file inside the state directory.
const FileName = "vxbridge.db"

var (
	bucketNetworks  = []byte("networks")
	bucketEndpoints = []byte("endpoints")
	bucketPools     = []byte("pools")
	bucketAddresses = []byte("addresses") // one nested bucket per pool id
	bucketMeta      = []byte("meta")
)

// ErrLocked means another process holds the state file.
var ErrLocked = errors.New("state file is locked by another process")

// DB is the bbolt-backed store. All methods are safe for concurrent use.
type DB struct {
	bolt      *bolt.DB
	path      string
	committer committer // groups concurrent writes into one transaction
	mark      markWriter

	originMu sync.Mutex
	origin   Origin // set by Open; Rollback changes later
}

// Options tune Open.
type Options struct {
	// LockTimeout bounds the wait for the file lock; a second vxbridge on
	// the same state directory fails after it instead of hanging.
	LockTimeout time.Duration
}

// Open opens the store in dir, making the file when there is none. An
// existing file is checked before bbolt reads it (check.go): a damaged one
// fails with ErrDamaged naming the file, the cause and the last good copy,
// never with a panic. Origin says what Open found.
func Open(dir string, opts Options) (_ *DB, retErr error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir %q: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	existing, notes, err := preflight(path, opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	b, err := openBolt(path, opts.LockTimeout)
	if err != nil {
		return nil, withGoodCopy(path, err)
	}
	db := &DB{bolt: b, path: path}
	defer func() {
		if retErr != nil {
			db.Close()
		}
	}()
	if err := db.initialise(existing); err != nil {
		return nil, withGoodCopy(path, err)
	}
	db.origin.Notes = notes
	return db, nil
}

// preflight says whether path holds a file for bbolt to read (not: absent
// or empty, which bbolt makes anew) and checks it under its lock.
func preflight(path string, timeout time.Duration) (existing bool, notes []string, err error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil, nil
	}
	if err != nil {
		return false, nil, fmt.Errorf("state file: %w", err)
	}
	if st.Size() == 0 {
		return false, nil, nil
	}
	unlock, err := lockFile(path, timeout)
	if err != nil {
		return true, nil, err
	}
	defer unlock()
	fc, err := checkFile(path)
	if err != nil {
		return true, nil, withGoodCopy(path, err)
	}
	return true, fc.notes, nil
}

// openBolt opens the file with bbolt. A panic or memory fault while bbolt
// reads it, which the check should have made impossible, becomes
// ErrDamaged rather than a crash.
func openBolt(path string, timeout time.Duration) (b *bolt.DB, err error) {
	defer guard(path, &err)()
	// No freelist on disk (as etcd runs bbolt): each commit writes and
	// syncs less, and Open rebuilds the list by scanning the file, which is
	// small.
	b, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, NoFreelistSync: true,
		FreelistType: bolt.FreelistMapType})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, lockedError(path)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return b, nil
}

// initialise runs Open's first transaction (buckets, identity, rollback)
// after checking the file with bbolt's own consistency check.
func (db *DB) initialise(existing bool) (err error) {
	defer guard(db.path, &err)()
	if existing {
		if err := db.bolt.View(consistent); err != nil {
			return fmt.Errorf("%s: %w: %w", db.path, ErrDamaged, err)
		}
	}
	mark := readMark(db.path + MarkSuffix)
	db.mark = openMark(db.path + MarkSuffix)
	if err := db.updateTx(func(tx *bolt.Tx) error { return db.initFile(tx, existing, mark) }); err != nil {
		return fmt.Errorf("initialise %s: %w", db.path, err)
	}
	return nil
}

// consistent runs bbolt's check of the whole file (pages reachable once,
// keys in order) and returns its first findings.
func consistent(tx *bolt.Tx) error {
	var errs []error
	for err := range tx.Check() {
		if len(errs) < 3 {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// guard turns a panic or a memory fault of the calling goroutine into
// ErrDamaged in *err. Use as `defer guard(path, &err)()`.
func guard(path string, err *error) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			*err = fmt.Errorf("%s: %w: bbolt failed reading it: %v", path, ErrDamaged, r)
		}
	}
}

// Path is the bbolt file's path.
func (db *DB) Path() string { return db.path }

// Close releases the file and its lock.
func (db *DB) Close() error {
	db.mark.close()
	return db.bolt.Close()
}

func put(tx *bolt.Tx, bucket []byte, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key), data)
}

// undecodable says that a record does not decode: the file was damaged
// inside a value, where bbolt keeps no checksum.
func (db *DB) undecodable(what string, err error) error {
	return fmt.Errorf("%s: %w: decode %s: %w", db.path, ErrDamaged, what, err)
}

func get[T any](db *DB, bucket []byte, key string) (*T, error) {
	var out *T
	err := db.bolt.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucket).Get([]byte(key))
		if data == nil {
			return nil
		}
		out = new(T)
		if err := json.Unmarshal(data, out); err != nil {
			return db.undecodable(fmt.Sprintf("%s/%s", bucket, key), err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", bucket, key, err)
	}
	return out, nil
}

func list[T any](db *DB, bucket []byte) ([]T, error) {
	var out []T
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var rec T
			if err := json.Unmarshal(v, &rec); err != nil {
				return db.undecodable(fmt.Sprintf("%s/%s", bucket, k), err)
			}
			out = append(out, rec)
			return nil
		})
	})
	return out, err
}

func (db *DB) update(what string, fn func(tx *bolt.Tx) error) error {
	if err := db.commit(fn); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// SaveNetwork writes (or overwrites) a network record.
func (db *DB) SaveNetwork(n *Network) error {
	return db.update("save network "+n.ID, func(tx *bolt.Tx) error { return put(tx, bucketNetworks, n.ID, n) })
}

// Network returns the network with id, or nil when there is none.
func (db *DB) Network(id string) (*Network, error) { return get[Network](db, bucketNetworks, id) }

// Networks returns every stored network.
func (db *DB) Networks() ([]Network, error) { return list[Network](db, bucketNetworks) }

// DeleteNetwork removes a network record; a missing one is not an error.
func (db *DB) DeleteNetwork(id string) error {
	return db.update("delete network "+id, func(tx *bolt.Tx) error { return tx.Bucket(bucketNetworks).Delete([]byte(id)) })
}

// SaveEndpoint writes (or overwrites) an endpoint record.
func (db *DB) SaveEndpoint(ep *Endpoint) error {
	return db.update("save endpoint "+ep.ID, func(tx *bolt.Tx) error { return put(tx, bucketEndpoints, ep.ID, ep) })
}

// Endpoint returns the endpoint with id, or nil when there is none.
func (db *DB) Endpoint(id string) (*Endpoint, error) { return get[Endpoint](db, bucketEndpoints, id) }

// Endpoints returns every stored endpoint.
func (db *DB) Endpoints() ([]Endpoint, error) { return list[Endpoint](db, bucketEndpoints) }

// DeleteEndpoint removes an endpoint record; a missing one is not an error.
func (db *DB) DeleteEndpoint(id string) error {
	return db.update("delete endpoint "+id, func(tx *bolt.Tx) error { return tx.Bucket(bucketEndpoints).Delete([]byte(id)) })
}

// SavePool writes (or overwrites) a pool record.
func (db *DB) SavePool(p *Pool) error {
	return db.update("save pool "+p.ID, func(tx *bolt.Tx) error {
		if _, err := tx.Bucket(bucketAddresses).CreateBucketIfNotExists([]byte(p.ID)); err != nil {
			return err
		}
		return put(tx, bucketPools, p.ID, p)
	})
}

// Pools returns every stored pool.
func (db *DB) Pools() ([]Pool, error) { return list[Pool](db, bucketPools) }

// DeletePool removes a pool and all its address records.
func (db *DB) DeletePool(id string) error {
	return db.update("delete pool "+id, func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketAddresses).DeleteBucket([]byte(id))
		if err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
			return err
		}
		return tx.Bucket(bucketPools).Delete([]byte(id))
	})
}

// SaveAddress marks addr of pool taken. next, when valid, is stored as the
// pool's new round-robin cursor in the same transaction.
func (db *DB) SaveAddress(poolID string, addr netip.Addr, kind AddressKind, next netip.Addr) error {
	return db.update(fmt.Sprintf("save address %s of pool %s", addr, poolID), func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAddresses).Bucket([]byte(poolID))
		if b == nil {
			return fmt.Errorf("pool %s is not stored", poolID)
		}
		key, _ := addr.MarshalBinary()
		if err := b.Put(key, []byte(kind)); err != nil {
			return err
		}
		if !next.IsValid() {
			return nil
		}
		p, err := txPool(tx, poolID)
		if err != nil {
			return err
		}
		p.Next = next
		return put(tx, bucketPools, poolID, p)
	})
}

// SetPoolRefs updates the reference count of a stored pool, leaving the rest
// of its record (the allocator's cursor) as it is.
func (db *DB) SetPoolRefs(id string, refs int) error {
	return db.update(fmt.Sprintf("count references of pool %s", id), func(tx *bolt.Tx) error {
		p, err := txPool(tx, id)
		if err != nil {
			return err
		}
		p.Refs = refs
		return put(tx, bucketPools, id, p)
	})
}

func txPool(tx *bolt.Tx, id string) (*Pool, error) {
	data := tx.Bucket(bucketPools).Get([]byte(id))
	if data == nil {
		return nil, fmt.Errorf("pool %s is not stored", id)
	}
	var p Pool
	return &p, json.Unmarshal(data, &p)
}

// DeleteAddress frees addr of pool; a missing one is not an error.
func (db *DB) DeleteAddress(poolID string, addr netip.Addr) error {
	return db.update(fmt.Sprintf("release address %s of pool %s", addr, poolID), func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAddresses).Bucket([]byte(poolID))
		if b == nil {
			return nil
		}
		key, _ := addr.MarshalBinary()
		return b.Delete(key)
	})
}

// Addresses returns the taken addresses of a pool.
func (db *DB) Addresses(poolID string) (map[netip.Addr]AddressKind, error) {
	out := map[netip.Addr]AddressKind{}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAddresses).Bucket([]byte(poolID))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var a netip.Addr
			if err := a.UnmarshalBinary(k); err != nil {
				return db.undecodable("an address of pool "+poolID, err)
			}
			out[a] = AddressKind(v)
			return nil
		})
	})
	return out, err
}

// Meta returns a value of the meta bucket ("" when unset).
func (db *DB) Meta(key string) (string, error) {
	var v string
	err := db.bolt.View(func(tx *bolt.Tx) error {
		v = string(tx.Bucket(bucketMeta).Get([]byte(key)))
		return nil
	})
	return v, err
}

// SetMeta writes a value of the meta bucket.
func (db *DB) SetMeta(key, value string) error {
	return db.update("save meta "+key, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put([]byte(key), []byte(value)) })
}
