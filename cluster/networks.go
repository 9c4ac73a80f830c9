package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ClaimNetwork checks n against the cluster and records it: the first host
// to create VNI n.VNI fixes its subnets; any other host must give the same
// subnets, and no subnet may belong to another VNI. A VNI no live host has
// (no member records) is free again. On success this host is a member until
// LeaveNetwork. It needs etcd: it is the one call of network creation that
// cannot be answered locally.
func (c *Client) ClaimNetwork(ctx context.Context, n Network) error {
	if err := c.awaitStanding(ctx); err != nil {
		return fmt.Errorf("claim vxlan.id %d: %w", n.VNI, err)
	}
	n.Host = c.host
	n.Subnets = sortedPrefixes(n.Subnets)
	for attempt := 0; attempt < 5; attempt++ {
		done, err := c.claimOnce(ctx, n)
		if err != nil || done {
			if err == nil {
				c.mu.Lock()
				c.members[n.VNI] = true
				c.touched[n.VNI] = true
				c.written = nil // the claim wrote a key: the next round reads them back
				c.changed()
				c.mu.Unlock()
			}
			return err
		}
	}
	return fmt.Errorf("claim vxlan.id %d: etcd state kept changing; try again", n.VNI)
}

// claimOnce is one compare-and-swap round; done false means the state
// changed under it and the caller tries again.
func (c *Client) claimOnce(ctx context.Context, n Network) (done bool, err error) {
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	seen, err := c.readClaim(rctx, n)
	if err != nil {
		return false, err
	}
	netConds, err := c.networkConds(n, seen)
	if err != nil {
		return false, err
	}
	subnetConds, err := c.subnetConds(rctx, n, seen)
	if err != nil {
		return false, err
	}
	s := c.snapshot()
	if s.lease == 0 {
		return false, fmt.Errorf("%w: this host has no etcd lease yet", ErrUnavailable)
	}
	// The member record and its copy, as the publishing rounds write them;
	// on this host's lease, and only while the host record is on it.
	conds := append(append(netConds, subnetConds...), c.leaseGuard(s)...)
	tr, err := c.etcd().Txn(rctx).If(conds...).Then(c.claimOps(n, seen, s)...).Commit()
	if err != nil {
		return false, fmt.Errorf("%w: record vxlan.id %d: %w", ErrUnavailable, n.VNI, err)
	}
	return tr.Succeeded, nil
}

// claimSeen is what a claim round read: the VNI's network record, whether
// any host is a member of it, and the record of each of its subnets.
type claimSeen struct {
	network []*mvccpb.KeyValue
	live    bool
	subnets [][]*mvccpb.KeyValue // by n.Subnets
}

// readClaim reads what a claim of n depends on, in one revision.
func (c *Client) readClaim(ctx context.Context, n Network) (claimSeen, error) {
	gets := []clientv3.Op{clientv3.OpGet(c.k.network(n.VNI)), clientv3.OpGet(c.k.netMembers(n.VNI), clientv3.WithPrefix(), clientv3.WithCountOnly())}
	for _, s := range n.Subnets {
		gets = append(gets, clientv3.OpGet(c.k.subnet(s)))
	}
	resp, err := c.etcd().Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return claimSeen{}, fmt.Errorf("%w: check vxlan.id %d against the cluster: %w", ErrUnavailable, n.VNI, err)
	}
	seen := claimSeen{network: resp.Responses[0].GetResponseRange().Kvs, live: resp.Responses[1].GetResponseRange().Count > 0}
	for i := range n.Subnets {
		seen.subnets = append(seen.subnets, resp.Responses[2+i].GetResponseRange().Kvs)
	}
	return seen, nil
}

// networkConds checks n against the VNI's record while a host is a member,
// and makes the write conditional on that record being as read.
func (c *Client) networkConds(n Network, seen claimSeen) ([]clientv3.Cmp, error) {
	key := c.k.network(n.VNI)
	if len(seen.network) == 0 {
		return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, nil
	}
	if seen.live {
		var have Network
		if err := json.Unmarshal(seen.network[0].Value, &have); err != nil {
			return nil, fmt.Errorf("network record of vxlan.id %d: %w", n.VNI, err)
		}
		if err := CheckNetwork(have, n); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConflict, err)
		}
	}
	return []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", seen.network[0].ModRevision)}, nil
}

// subnetConds refuses a subnet of n that a live VNI holds, and makes the
// write conditional on each subnet record being as read.
func (c *Client) subnetConds(ctx context.Context, n Network, seen claimSeen) ([]clientv3.Cmp, error) {
	var conds []clientv3.Cmp
	for i, s := range n.Subnets {
		kvs := seen.subnets[i]
		if len(kvs) == 0 {
			conds = append(conds, clientv3.Compare(clientv3.CreateRevision(c.k.subnet(s)), "=", 0))
			continue
		}
		other, err := strconv.ParseUint(string(kvs[0].Value), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("subnet record %s: %q is not a vni", s, kvs[0].Value)
		}
		if uint32(other) != n.VNI {
			if live, err := c.vniLive(ctx, uint32(other)); err != nil || live {
				if err == nil {
					err = fmt.Errorf("%w: %w", ErrConflict, CheckSubnet(n, s, uint32(other)))
				}
				return nil, err
			}
		}
		conds = append(conds, clientv3.Compare(clientv3.ModRevision(c.k.subnet(s)), "=", kvs[0].ModRevision))
	}
	return conds, nil
}

// claimOps writes this host's membership of n (on lease s.lease), n's
// record when no live host holds the VNI, and n's subnet records.
func (c *Client) claimOps(n Network, seen claimSeen, s snapshot) []clientv3.Op {
	member := c.memberRecord(s.self)
	ops := []clientv3.Op{clientv3.OpPut(c.k.netMember(n.VNI, c.host), member, clientv3.WithLease(s.lease)),
		clientv3.OpPut(c.k.membership(c.host, n.VNI), member, clientv3.WithLease(s.lease))}
	if len(seen.network) == 0 || !seen.live {
		ops = append(ops, clientv3.OpPut(c.k.network(n.VNI), encode(n)))
	}
	for _, sub := range n.Subnets {
		ops = append(ops, clientv3.OpPut(c.k.subnet(sub), vniString(n.VNI)))
	}
	return ops
}

func (c *Client) vniLive(ctx context.Context, vni uint32) (bool, error) {
	resp, err := c.etcd().Get(ctx, c.k.netMembers(vni), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return resp.Count > 0, nil
}

// LeaveNetwork ends this host's membership of vni (in the background, like
// Withdraw). The VNI's record stays until a host claims the VNI while no
// host is a member.
func (c *Client) LeaveNetwork(vni uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.members[vni] {
		delete(c.members, vni)
		c.changed()
	}
}

// Member reports whether this host is a member of vni (locally known).
func (c *Client) Member(vni uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[vni]
}

// Rejoin marks vni as one of this host's networks without checking etcd:
// for networks a restarted plugin finds in its state file, which were
// checked when they were created.
func (c *Client) Rejoin(vni uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.members[vni] {
		c.members[vni] = true
		c.changed()
	}
}
