package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

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
	gets := []clientv3.Op{clientv3.OpGet(c.k.network(n.VNI)), clientv3.OpGet(c.k.netMembers(n.VNI), clientv3.WithPrefix(), clientv3.WithCountOnly())}
	for _, s := range n.Subnets {
		gets = append(gets, clientv3.OpGet(c.k.subnet(s)))
	}
	resp, err := c.etcd().Txn(rctx).Then(gets...).Commit()
	if err != nil {
		return false, fmt.Errorf("%w: check vxlan.id %d against the cluster: %w", ErrUnavailable, n.VNI, err)
	}
	var conds []clientv3.Cmp
	netKV := resp.Responses[0].GetResponseRange().Kvs
	live := resp.Responses[1].GetResponseRange().Count > 0
	if len(netKV) == 1 && live {
		var have Network
		if err := json.Unmarshal(netKV[0].Value, &have); err != nil {
			return false, fmt.Errorf("network record of vxlan.id %d: %w", n.VNI, err)
		}
		if err := CheckNetwork(have, n); err != nil {
			return false, fmt.Errorf("%w: %w", ErrConflict, err)
		}
	}
	if len(netKV) == 1 {
		conds = append(conds, clientv3.Compare(clientv3.ModRevision(c.k.network(n.VNI)), "=", netKV[0].ModRevision))
	} else {
		conds = append(conds, clientv3.Compare(clientv3.CreateRevision(c.k.network(n.VNI)), "=", 0))
	}
	for i, s := range n.Subnets {
		kvs := resp.Responses[2+i].GetResponseRange().Kvs
		if len(kvs) == 0 {
			conds = append(conds, clientv3.Compare(clientv3.CreateRevision(c.k.subnet(s)), "=", 0))
			continue
		}
		other, err := strconv.ParseUint(string(kvs[0].Value), 10, 32)
		if err != nil {
			return false, fmt.Errorf("subnet record %s: %q is not a vni", s, kvs[0].Value)
		}
		if uint32(other) != n.VNI {
			if live, err := c.vniLive(rctx, uint32(other)); err != nil || live {
				if err == nil {
					err = fmt.Errorf("%w: %w", ErrConflict, CheckSubnet(n, s, uint32(other)))
				}
				return false, err
			}
		}
		conds = append(conds, clientv3.Compare(clientv3.ModRevision(c.k.subnet(s)), "=", kvs[0].ModRevision))
	}
	s := c.snapshot()
	if s.lease == 0 {
		return false, fmt.Errorf("%w: this host has no etcd lease yet", ErrUnavailable)
	}
	// The member record and its copy, as the publishing rounds write them;
	// on this host's lease, and only while the host record is on it.
	conds = append(conds, c.leaseGuard(s)...)
	member := c.memberRecord(s.self)
	ops := []clientv3.Op{clientv3.OpPut(c.k.netMember(n.VNI, c.host), member, clientv3.WithLease(s.lease)),
		clientv3.OpPut(c.k.membership(c.host, n.VNI), member, clientv3.WithLease(s.lease))}
	if len(netKV) == 0 || !live {
		ops = append(ops, clientv3.OpPut(c.k.network(n.VNI), encode(n)))
	}
	for _, s := range n.Subnets {
		ops = append(ops, clientv3.OpPut(c.k.subnet(s), vniString(n.VNI)))
	}
	tr, err := c.etcd().Txn(rctx).If(conds...).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("%w: record vxlan.id %d: %w", ErrUnavailable, n.VNI, err)
	}
	return tr.Succeeded, nil
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
