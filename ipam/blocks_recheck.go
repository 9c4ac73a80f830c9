package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vxbridge/vxbridge/store"
)

// recheck checks the held blocks in etcd when the host took a new lease
// since they were last checked (see the note on blocks in blocks.go). bmu
// held.
func (b *blockAllocator) recheck(ctx context.Context) error {
	l := b.f.cfg.Leaser
	epoch := l.LeaseEpoch()
	if epoch == b.epoch {
		return nil
	}
	held, err := l.HeldBlocks(ctx, b.poolKey)
	if err != nil {
		return fmt.Errorf("pool %s: this host took a new etcd lease (its first, or its last one lapsed), and etcd must confirm that its address blocks are still its own before it hands out more: %w",
			b.rec.Prefix, err)
	}
	me := l.HostID()
	keep := make([]netip.Prefix, 0, len(b.blocks))
	for _, blk := range b.blocks {
		holder, ok := held[blk]
		if !ok {
			claimed, err := l.ClaimBlock(ctx, b.poolKey, blk)
			if err != nil {
				return fmt.Errorf("pool %s: claim address block %s again: %w", b.rec.Prefix, blk, err)
			}
			if claimed {
				holder = me
			}
		}
		if holder == me {
			keep = append(keep, blk)
			continue
		}
		b.f.cfg.Logger.Warn("address block taken by another host while this host's lease had lapsed: no new address comes from it",
			"pool", b.rec.Prefix, "block", blk, "holder", orNobody(holder), "containers_keeping_addresses_in_it", b.addressesIn(blk))
	}
	if len(keep) != len(b.blocks) {
		if err := b.setBlocks(keep); err != nil {
			return err
		}
	}
	b.epoch = epoch
	return nil
}

// addressesIn lists the container addresses this host has in blk.
func (b *blockAllocator) addressesIn(blk netip.Prefix) []netip.Addr {
	a := b.localAllocator
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []netip.Addr
	for addr, kind := range a.taken {
		if (kind == store.KindEndpoint || kind == store.KindStatic) && blk.Contains(addr) {
			out = append(out, addr)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func orNobody(host string) string {
	if host == "" {
		return "(another host's claim won)"
	}
	return host
}
