package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// HeldBlocks returns the address blocks of pool (see PoolKey) and the host
// holding each.
func (c *Client) HeldBlocks(ctx context.Context, pool string) (map[netip.Prefix]string, error) {
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	if err := c.awaitStanding(rctx); err != nil {
		return nil, fmt.Errorf("list address blocks of pool %s: %w", pool, err)
	}
	resp, err := c.etcd().Get(rctx, c.k.blocks(pool), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("%w: list address blocks of pool %s: %w", ErrUnavailable, pool, err)
	}
	out := map[netip.Prefix]string{}
	for _, kv := range resp.Kvs {
		b, err := unescapePrefix(strings.TrimPrefix(string(kv.Key), c.k.blocks(pool)))
		if err != nil {
			c.log.Warn("etcd: ignoring malformed block key", "key", string(kv.Key))
			continue
		}
		out[b] = string(kv.Value)
	}
	return out, nil
}

// ClaimBlock takes block of pool for this host with a compare-and-swap: it
// succeeds when the block is free, already this host's, or held by a host
// that is gone (no host record: its lease expired) and has no endpoint
// records left (so none of its addresses can still be in use). ok false
// means another host holds it.
func (c *Client) ClaimBlock(ctx context.Context, pool string, block netip.Prefix) (ok bool, err error) {
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	if err := c.awaitStanding(rctx); err != nil {
		return false, fmt.Errorf("claim block %s of pool %s: %w", block, pool, err)
	}
	key := c.k.block(pool, block)
	put := clientv3.OpPut(key, c.host)
	tr, err := c.etcd().Txn(rctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(put).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return false, fmt.Errorf("%w: claim block %s of pool %s: %w", ErrUnavailable, block, pool, err)
	}
	if tr.Succeeded {
		return true, nil
	}
	kvs := tr.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return false, nil // released meanwhile: the caller's next round sees it free
	}
	holder := string(kvs[0].Value)
	if holder == c.host {
		return true, nil
	}
	// Reclaim from a dead host, all in one comparison so a host that comes
	// back at the same moment keeps its block.
	tr, err = c.etcd().Txn(rctx).If(
		clientv3.Compare(clientv3.Value(key), "=", holder),
		clientv3.Compare(clientv3.CreateRevision(c.k.host(holder)), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(c.k.hostEndpoints(holder)), "=", 0).WithPrefix(),
	).Then(put).Commit()
	if err != nil {
		return false, fmt.Errorf("%w: reclaim block %s of pool %s: %w", ErrUnavailable, block, pool, err)
	}
	if tr.Succeeded {
		c.log.Info("etcd: reclaimed address block of a departed host", "pool", pool, "block", block, "from", holder)
	}
	return tr.Succeeded, nil
}

// ReleaseBlock gives block back when this host holds it.
func (c *Client) ReleaseBlock(ctx context.Context, pool string, block netip.Prefix) error {
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	key := c.k.block(pool, block)
	_, err := c.etcd().Txn(rctx).If(clientv3.Compare(clientv3.Value(key), "=", c.host)).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return fmt.Errorf("%w: release block %s of pool %s: %w", ErrUnavailable, block, pool, err)
	}
	return nil
}
