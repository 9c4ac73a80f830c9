package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This host's standing: whether its host id is its own in etcd, and which
// lease it holds.
//
// Two hosts with one id (a cloned VM image, a copied state directory) would
// delete each other's records and share address blocks. The host record
// hosts/<id> says which host has the id: a host takes it only when it is
// free, on its own lease, or written by this host before (the same VTEP: a
// restart within the TTL). Every transaction a host writes its records in
// is conditional on the host record being what it last saw, then on its
// own lease, so a second host that took the id meanwhile makes the next
// write fail, and the next full round finds it. A host whose id is live
// elsewhere writes nothing, claims no network and no address block, and
// says why and what to do (HostIDInUseError) until the other host is gone.

// HostIDInUseError says that this host's id is live on another host.
type HostIDInUseError struct {
	HostID   string
	VTEP     string // the other host's
	IDFile   string // where this host keeps its id ("" if unknown)
	Revision int64  // etcd revision the other host wrote its record at
}

func (e *HostIDInUseError) Error() string {
	file := e.IDFile
	if file == "" {
		file = "the host-id file in --state-dir"
	}
	return fmt.Sprintf("host id %s is live on another host (VTEP %s, host record written at etcd revision %d): this machine was cloned or its state directory copied, "+
		"and two hosts with one id would delete each other's records and hand out the same addresses, so this host publishes nothing and leases no address block until that host is gone. "+
		"To fix it: stop vxbridge here, delete %s (a new id is made at the next start; with etcd auth, give the new id an identity: vxbridge cluster add-host --host-id NEW) and start vxbridge again",
		e.HostID, e.VTEP, e.Revision, file)
}

// errHostKeyChanged: a write found the host record changed by someone
// else; the next round reads it back.
var errHostKeyChanged = errors.New("this host's record in etcd was changed by someone else; reading it back")

// checkHostKey refuses the host id when have (this host's keys, as read)
// holds a host record of another live host: another lease and another VTEP.
func (c *Client) checkHostKey(have map[string]keyValue, s snapshot) error {
	kv, ok := have[c.k.host(c.host)]
	if !ok || clientv3.LeaseID(kv.Lease) == s.lease || !s.self.VTEP.IsValid() {
		return nil
	}
	var h Host
	if err := json.Unmarshal(kv.Value, &h); err == nil && h.VTEP == s.self.VTEP {
		return nil // this host's own, of a run before
	}
	return &HostIDInUseError{HostID: c.host, VTEP: orUnknown(h.VTEP.String()), IDFile: c.idFile, Revision: kv.ModRev}
}

// hostGuard is the condition of a round's first write: the host record as
// ownKeys read it (absent, or at that revision), or on this host's lease.
func (c *Client) hostGuard(have map[string]keyValue, s snapshot) []clientv3.Cmp {
	if !s.self.VTEP.IsValid() {
		return nil
	}
	key := c.k.host(c.host)
	kv, ok := have[key]
	switch {
	case !ok:
		return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
	case clientv3.LeaseID(kv.Lease) == s.lease:
		return c.leaseGuard(s)
	case kv.ModRev == 0:
		// Written by the round before on another lease: that lease was
		// lost, and the round reading back (full) must decide.
		return []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(key), "=", s.lease)}
	}
	return []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRev)}
}

// leaseGuard: the host record is on this host's lease.
func (c *Client) leaseGuard(s snapshot) []clientv3.Cmp {
	if !s.self.VTEP.IsValid() {
		return nil
	}
	return []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(c.k.host(c.host)), "=", int64(s.lease))}
}

// setStanding records the outcome of checking the host id.
func (c *Client) setStanding(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.noteStandingLocked(c.lease, err)
}

// noteStandingLocked: a round on lease succeeded (err nil), or found the
// id in use. c.mu held.
func (c *Client) noteStandingLocked(lease clientv3.LeaseID, err error) {
	c.idErr = err
	if err == nil && lease == c.lease {
		c.ownedLease = lease
	}
}

// awaitStanding waits until this host's records are in etcd on its current
// lease, so the host id is known to be its own: before it claims a network
// or an address block. It fails at once when the id is live elsewhere.
func (c *Client) awaitStanding(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c.mu.Lock()
		err, owned := c.idErr, c.lease != 0 && c.ownedLease == c.lease
		c.mu.Unlock()
		switch {
		case err != nil:
			return err
		case owned:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: this host's records are not in etcd yet: %w", ErrUnavailable, ctx.Err())
		case <-tick.C:
		}
	}
}

// LeaseEpoch counts the leases this host took and lost: it changes when a
// lease is found gone and when a new one replaces it (the first one after a
// start included). An address block held under an older lease may have been
// reclaimed by another host while this one was away, so the allocator
// checks its blocks again.
func (c *Client) LeaseEpoch() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// InContact says, without asking etcd, whether etcd answered this host
// about its lease (a grant, a keep-alive, "lease not found") within two
// thirds of the TTL: clientv3 renews every third, so a longer silence means
// etcd is unreachable, and a check of the address blocks would only wait
// for its timeout. A new client counts as in contact for that long, so the
// first calls wait for its first lease.
func (c *Client) InContact() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.answered.IsZero() && time.Since(c.answered) <= c.renewGap()
}

// Unreachable says whether err, from HeldBlocks or ClaimBlock, means etcd
// did not answer; false for an answer that refuses: the host id is live
// elsewhere, or this host's etcd user may not read the blocks.
func (c *Client) Unreachable(err error) bool {
	return errors.Is(err, ErrUnavailable) && !errors.Is(err, rpctypes.ErrPermissionDenied)
}
