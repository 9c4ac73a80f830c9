package ipam

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vxbridge/vxbridge/store"
)

// Confirming held blocks after a lease changed
//
// The rule, and why. A block is this host's only while etcd says so, and
// etcd lets another host reclaim it once this host's lease has lapsed (see
// the note on blocks in blocks.go). A host cannot tell from the inside
// whether its lease lapsed while etcd was away: a whole-etcd outage keeps
// every lease (a restarted etcd renews them all), a partition of this host
// alone lets its lease run out. So the held blocks are "confirmed" under a
// lease epoch (Leaser.LeaseEpoch, which moves when a lease is found gone
// and when a new one is taken, the first after a start included), and
// before an address comes from a block:
//
//   - confirmed under the current epoch: hand it out (the lease that
//     confirmed it is still the host's, so no one could have reclaimed it);
//   - not confirmed, and etcd answers: list the pool's blocks first. Blocks
//     still this host's are kept, blocks no one holds are claimed again,
//     blocks another host holds are dropped and remembered as lost, with
//     this host's containers still in them (their addresses may now be
//     handed out by the holder too: logged, listed by LostBlocks, named in
//     the error when the pool has nothing else to give);
//   - not confirmed, and etcd does not answer (the listing failed for want
//     of an answer, within the time below): hand it out from the blocks
//     the state file holds, the last claim this host had confirmed, and say
//     so in the log. A host whose etcd is down keeps starting its own
//     containers; the check runs at the first allocation after etcd answers
//     again, before any further address. An answer that refuses (the host
//     id is live elsewhere, permission denied) is no outage: nothing is
//     handed out, since a cloned host would share every block.
//
// What remains possible, by choice: during a partition of this host alone
// that outlasts its TTL, while the pool is so tight that another host
// reclaims one of its blocks, both may hand out the same address until
// this host is back; the older endpoint record keeps it in every host's
// tables, and the conflict shows in vxbridge status and in LostBlocks.

// LostBlock is a block this host held that another host took while this
// host's lease had lapsed, with this host's containers still in it.
type LostBlock struct {
	Pool      netip.Prefix
	Block     netip.Prefix
	Holder    string       // the host holding it now
	Addresses []netip.Addr // this host's container addresses in it
}

// What one check may cost a container start: etcd answers a listing of a
// pool's blocks within milliseconds, so a check that takes longer finds
// etcd unreachable (or too slow to lean on) and the blocks are used
// unconfirmed. While etcd answers this host's keep-alives the check gets
// checkTimeout; once it has not answered lately (Leaser.InContact) every
// allocation still asks first, so the first one after etcd is back checks,
// but waits only probeTimeout: every container start pays it during an
// outage.
const (
	checkTimeout = 2 * time.Second
	probeTimeout = 500 * time.Millisecond
)

// lostBlock is what a blockAllocator remembers of a LostBlock.
type lostBlock struct {
	block  netip.Prefix
	holder string
}

// recheck confirms the held blocks in etcd when they are not confirmed
// under the current lease epoch; while etcd does not answer it leaves them
// unconfirmed and in use. bmu held.
func (b *blockAllocator) recheck(ctx context.Context) error {
	l := b.f.cfg.Leaser
	epoch := l.LeaseEpoch()
	if b.confirmed && epoch == b.epoch {
		return nil
	}
	budget := probeTimeout
	if l.InContact() {
		budget = checkTimeout
	}
	cctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	keep, lost, err := b.check(cctx)
	if err != nil && l.Unreachable(err) {
		b.noteUnconfirmed(err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("pool %s: etcd must confirm that this host's address blocks are still its own (its lease is new, or its last one lapsed) before it hands out more: %w",
			b.rec.Prefix, err)
	}
	for _, x := range lost {
		b.f.cfg.Logger.Warn("address block taken by another host while this host's lease had lapsed: no new address comes from it, and these containers' addresses may be handed out twice",
			"pool", b.rec.Prefix, "block", x.block, "holder", orNobody(x.holder), "conflicting_addresses", b.addressesIn(x.block))
	}
	if len(keep) != len(b.blocks) {
		if err := b.setBlocks(keep); err != nil {
			return err
		}
	}
	b.lost = append(b.lost, lost...)
	if !b.unconfirmedSince.IsZero() {
		b.f.cfg.Logger.Info("address blocks confirmed in etcd again", "pool", b.rec.Prefix, "blocks", b.blocks,
			"unconfirmed_for", time.Since(b.unconfirmedSince).Round(time.Millisecond))
	}
	b.confirmed, b.epoch, b.unconfirmedSince, b.unconfirmedWhy = true, epoch, time.Time{}, nil
	return nil
}

// check lists the pool's blocks in etcd and sorts the held ones into those
// still this host's (claimed again when no one holds them) and those another
// host took. It changes nothing here. bmu held.
func (b *blockAllocator) check(ctx context.Context) (keep []netip.Prefix, lost []lostBlock, err error) {
	l := b.f.cfg.Leaser
	held, err := l.HeldBlocks(ctx, b.poolKey)
	if err != nil {
		return nil, nil, err
	}
	me := l.HostID()
	for _, blk := range b.blocks {
		holder, ok := held[blk]
		if !ok || holder == "" { // no live host holds it: this host's again, unless a claim wins
			claimed, err := l.ClaimBlock(ctx, b.poolKey, blk)
			if err != nil {
				return nil, nil, fmt.Errorf("claim address block %s again: %w", blk, err)
			}
			if claimed {
				holder = me
			}
		}
		if holder == me {
			keep = append(keep, blk)
			continue
		}
		lost = append(lost, lostBlock{block: blk, holder: holder})
	}
	return keep, lost, nil
}

// noteUnconfirmed logs, once per outage, that addresses come from blocks
// etcd has not confirmed, and keeps why. bmu held.
func (b *blockAllocator) noteUnconfirmed(why error) {
	b.unconfirmedWhy = why
	if !b.unconfirmedSince.IsZero() {
		return
	}
	b.unconfirmedSince = time.Now()
	b.f.cfg.Logger.Warn("etcd does not answer: addresses come from the address blocks in the state file, unconfirmed, until it does",
		"pool", b.rec.Prefix, "blocks", b.blocks, "err", why)
}

// lostNow lists the lost blocks that still hold containers of this host
// and forgets the others (their conflict is over). bmu held.
func (b *blockAllocator) lostNow() []LostBlock {
	var out []LostBlock
	b.lost = slices.DeleteFunc(b.lost, func(x lostBlock) bool {
		addrs := b.addressesIn(x.block)
		if len(addrs) == 0 || slices.Contains(b.blocks, x.block) {
			return true
		}
		out = append(out, LostBlock{Pool: b.rec.Prefix, Block: x.block, Holder: orNobody(x.holder), Addresses: addrs})
		return false
	})
	return out
}

// lostNote is the part of an exhaustion error that names the lost blocks.
// bmu held.
func (b *blockAllocator) lostNote() string {
	var parts []string
	for _, x := range b.lostNow() {
		parts = append(parts, fmt.Sprintf("block %s went to host %s while this host's lease had lapsed (this host's containers keep %v there)",
			x.Block, x.Holder, x.Addresses))
	}
	if len(parts) == 0 {
		return ""
	}
	return "; " + strings.Join(parts, "; ")
}

// LostBlocks lists, for every pool, the blocks another host took while this
// host's lease had lapsed and in which this host's containers still have
// addresses: each of those addresses may be handed out twice.
func (f *BlockAllocators) LostBlocks() []LostBlock {
	f.mu.Lock()
	all := slices.Collect(maps.Values(f.byPool))
	f.mu.Unlock()
	var out []LostBlock
	for _, b := range all {
		b.bmu.Lock()
		out = append(out, b.lostNow()...)
		b.bmu.Unlock()
	}
	slices.SortFunc(out, func(x, y LostBlock) int { return x.Block.Addr().Compare(y.Block.Addr()) })
	return out
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
