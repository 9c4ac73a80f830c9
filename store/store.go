package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
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
}

// Options tune Open.
type Options struct {
	// LockTimeout bounds the wait for the file lock; a second vxbridge on
	// the same state directory fails after it instead of hanging.
	LockTimeout time.Duration
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*DB, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir %q: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	// No freelist on disk (as etcd runs bbolt): each commit writes and
	// syncs less, and Open rebuilds the list by scanning the file, which is
	// small.
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, NoFreelistSync: true,
		FreelistType: bolt.FreelistMapType})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w (is another vxbridge running with --state-dir %s?)", path, ErrLocked, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketNetworks, bucketEndpoints, bucketPools, bucketAddresses, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("initialise %s: %w", path, err)
	}
	return &DB{bolt: b, path: path}, nil
}

// Path is the bbolt file's path.
func (db *DB) Path() string { return db.path }

// Close releases the file and its lock.
func (db *DB) Close() error { return db.bolt.Close() }

func put(tx *bolt.Tx, bucket []byte, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key), data)
}

func get[T any](db *DB, bucket []byte, key string) (*T, error) {
	var out *T
	err := db.bolt.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucket).Get([]byte(key))
		if data == nil {
			return nil
		}
		out = new(T)
		return json.Unmarshal(data, out)
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
				return fmt.Errorf("decode %s/%s: %w", bucket, k, err)
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
				return fmt.Errorf("decode address of pool %s: %w", poolID, err)
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
