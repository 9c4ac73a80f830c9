package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults of Config.
const (
	DefaultTTL         = 20 * time.Second
	DefaultDialTimeout = 5 * time.Second
	// RequestTimeout bounds each etcd call of the background loops.
	RequestTimeout = 5 * time.Second
)

// ErrConflict marks a network the cluster already knows differently.
var ErrConflict = errors.New("cross-host network conflict")

// ErrUnavailable marks a call that needed etcd and could not reach it.
var ErrUnavailable = errors.New("etcd unavailable")

// Config configures a Client.
type Config struct {
	Endpoints []string
	TLS       *tls.Config // nil: plain http
	Prefix    string      // default DefaultPrefix
	HostID    string      // required
	// HostIDFile is where this host keeps its id, named when the id turns
	// out to be live on another host.
	HostIDFile string
	// Username and Password, when set, authenticate to etcd (etcd's
	// users and roles: see admin.go for what a host is granted).
	Username, Password string
	TTL                time.Duration
	Logger             *slog.Logger
}

// Client is one host's connection to the cluster state.
type Client struct {
	conn conn // the etcd connection (conn.go): use c.etcd()
	k    keys
	host string
	ttl  time.Duration
	log  *slog.Logger

	mu      sync.Mutex
	self    Host
	eps     map[string]Endpoint // this host's endpoints, as they should be in etcd
	members map[uint32]bool     // cross-host networks this host has
	touched map[uint32]bool     // networks whose records the last rounds wrote
	written map[string]keyValue // this host's keys as the last round left them (nil: unknown)
	lease   clientv3.LeaseID    // 0: none held
	gen     uint64              // bumped on every change of eps/members/self
	synced  uint64              // gen last written to etcd
	kick    chan struct{}
	syncedC chan struct{} // closed and replaced whenever synced changes
	lastErr error         // of the last publish round; nil after a success
	rounds  int           // publish rounds done, to tell "not yet" from "ok"
	// renewed is the last grant or keep-alive answer of lease (zero: none);
	// healthySince starts the current run of timely renewals (hold.go);
	// answered is etcd's last answer about the lease, "gone" included
	// (InContact).
	renewed, healthySince, answered time.Time

	// epoch counts the leases taken and lost; ownedLease is the lease a round last
	// wrote this host's records on, idErr why the host id is not this
	// host's (standing.go).
	epoch      uint64
	ownedLease clientv3.LeaseID
	idErr      error
	idFile     string

	lists, events atomic.Uint64 // network listings and watch events received (WatchStats)
	copyReads     atomic.Uint64 // hosts' own copies read to verify their records (verify.go)
	old           oldHosts      // live hosts on the layout before records by network (legacy.go)
	blk           blockState    // address block claims (blocks.go)
}

// New returns a Client. It does not wait for etcd: the plugin starts and
// serves local networks while etcd is down.
func New(cfg Config) (*Client, error) {
	if cfg.HostID == "" {
		return nil, errors.New("cluster: no host id")
	}
	c := &Client{
		k: newKeys(cfg.Prefix), host: cfg.HostID, ttl: cfg.TTL, log: cfg.Logger, idFile: cfg.HostIDFile,
		eps: map[string]Endpoint{}, members: map[uint32]bool{}, touched: map[uint32]bool{},
		kick: make(chan struct{}, 1), syncedC: make(chan struct{}),
		// Presumed in contact at the start: calls wait for the first
		// lease rather than fail at once (InContact).
		answered: time.Now(),
	}
	if c.ttl <= 0 {
		c.ttl = DefaultTTL
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if err := c.connect(cfg); err != nil {
		return nil, err
	}
	return c, nil
}

// HostID is this host's id.
func (c *Client) HostID() string { return c.host }

func (c *Client) changed() {
	c.gen++
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// SetHost sets this host's record (VTEP and port); the Run loop publishes it.
func (c *Client) SetHost(h Host) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h.ID, h.Layout = c.host, LayoutByNetwork
	c.self = h
	c.changed()
}

// Publish makes ep one of this host's published endpoints. It never waits
// for etcd: the Run loop writes it, retrying until etcd takes it.
func (c *Client) Publish(ep Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ep.Host = c.host
	if old, ok := c.eps[ep.ID]; ok && old == ep {
		return // a re-publish (reconcile) costs etcd nothing
	}
	c.eps[ep.ID] = ep
	c.changed()
}

// Withdraw removes endpoint id from this host's published endpoints, in the
// background like Publish.
func (c *Client) Withdraw(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.eps[id]; ok {
		delete(c.eps, id)
		c.changed()
	}
}

// Synced returns a channel closed once everything published so far is in
// etcd (or at the next change of the synced state).
func (c *Client) Synced() (done bool, next <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced == c.gen, c.syncedC
}

// WaitSynced waits until everything published before the call is in etcd.
func (c *Client) WaitSynced(ctx context.Context) error {
	for {
		done, next := c.Synced()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-next:
		}
	}
}

func encode(v any) string {
	b, _ := json.Marshal(v) // records hold only marshalable fields
	return string(b)
}

func vniString(vni uint32) string { return strconv.FormatUint(uint64(vni), 10) }

// Connected reports whether the last round of publishing this host's
// records reached etcd, and if not, why.
func (c *Client) Connected() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.rounds == 0:
		return false, "not connected yet"
	case c.lastErr != nil:
		return false, c.lastErr.Error()
	}
	return true, ""
}

func (c *Client) recordRound(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rounds++
	c.lastErr = err
}
