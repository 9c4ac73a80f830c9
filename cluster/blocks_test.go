package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vxbridge/vxbridge/internal/testutil/etcdtest"
)

var testPool = PoolKey(netip.MustParsePrefix("10.1.0.0/24"))

// holderSeen fails the test unless every host sees want hold blk.
func holderSeen(t *testing.T, blk netip.Prefix, want, after string, hosts ...*testHost) {
	t.Helper()
	for _, h := range hosts {
		held, err := h.c.HeldBlocks(context.Background(), testPool)
		if err != nil || held[blk] != want {
			t.Fatalf("after %s: host %s sees %v (%v), want block %s held by %q", after, h.c.host, held, err, blk, want)
		}
	}
}

// claims fails the test unless h's claim of blk comes out as want.
func claims(t *testing.T, h *testHost, blk netip.Prefix, want bool, after string) {
	t.Helper()
	ok, err := h.c.ClaimBlock(context.Background(), testPool, blk)
	if err != nil || ok != want {
		t.Fatalf("after %s: host %s claims block %s: %t %v, want %t", after, h.c.host, blk, ok, err, want)
	}
}

// TestForgedBlockClaimsNotBelieved: with etcd auth on, host ha's identity
// cannot touch host hb's claim of a block, and what it may write (deleting
// or rewriting blocks/<pool>/<block>, a claim of its own for hb's block)
// changes nothing: hc still cannot claim the block, hb keeps it, and ha
// does not become its holder. A claim it wrote without a lease goes when
// its identity is removed.
func TestForgedBlockClaimsNotBelieved(t *testing.T) {
	ac := newAuthCluster(t, "ha", "hb", "hc")
	a, b, c := ac.host(t, "ha", "192.0.2.1"), ac.host(t, "hb", "192.0.2.2"), ac.host(t, "hc", "192.0.2.3")
	for _, h := range []*testHost{a, b, c} {
		waitSynced(t, h.c, 15*time.Second) // authenticating costs bcrypt rounds: slow on a loaded machine
	}
	ctx := context.Background()
	blk, other := pfx("10.1.0.0/26")[0], pfx("10.1.0.64/26")[0]
	claims(t, b, blk, true, "a free block")
	claims(t, c, other, true, "a free block")

	evil, k := ac.raw(t, "ha"), a.c.k
	for what, err := range map[string]error{
		"deletes hb's claim":            opErr(evil.Delete(ctx, k.hostBlock("hb", testPool, blk))),
		"rewrites hb's claim":           opErr(evil.Put(ctx, k.hostBlock("hb", testPool, blk), "")),
		"deletes every claim":           opErr(evil.Delete(ctx, k.allHostBlocks(), clientv3.WithPrefix())),
		"claims a block in hc's name":   opErr(evil.Put(ctx, k.hostBlock("hc", testPool, pfx("10.1.0.128/26")[0]), "")),
		"gives hb a block it never had": opErr(evil.Put(ctx, k.hostBlock("hb", testPool, pfx("10.1.0.192/26")[0]), "")),
	} {
		if !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Errorf("ha %s: %v, want permission denied", what, err)
		}
	}

	for _, attack := range []struct {
		what string
		do   func() error
	}{
		{"deletes hb's blocks/ key", func() error { return opErr(evil.Delete(ctx, k.block(testPool, blk))) }},
		{"rewrites hb's blocks/ key to name ha", func() error { return opErr(evil.Put(ctx, k.block(testPool, blk), "ha")) }},
		{"writes a claim of its own for hb's block", func() error {
			return opErr(evil.Put(ctx, k.hostBlock("ha", testPool, blk), ""))
		}},
		{"deletes hb's blocks/ key beside its own claim", func() error { return opErr(evil.Delete(ctx, k.block(testPool, blk))) }},
	} {
		if err := attack.do(); err != nil {
			t.Fatalf("ha %s: %v (etcd lets every host write there)", attack.what, err)
		}
		after := "ha " + attack.what
		holderSeen(t, blk, "hb", after, a, b, c)
		claims(t, c, blk, false, after)
		claims(t, a, blk, false, after)
		claims(t, b, blk, true, after) // and what hb's re-check does: it keeps the block
	}
	holderSeen(t, other, "hc", "all that", a, b, c)

	// A claim ha writes without a lease would hold its block for ever:
	// removing ha's identity takes it away.
	spare := pfx("10.1.0.128/26")[0]
	if _, err := evil.Put(ctx, k.hostBlock("ha", testPool, spare), ""); err != nil {
		t.Fatal(err)
	}
	holderSeen(t, spare, "ha", "ha's claim without a lease", b, c)
	adm := ac.admin(t, "root", "rootpw")
	defer adm.Close()
	if err := adm.RemoveHost(ctx, "ha"); err != nil {
		t.Fatal(err)
	}
	claims(t, c, spare, true, "ha was removed")
}

// TestHostWithoutClaimGrantPublishes: a host whose role was made before
// hostblocks/ existed (add-host not run again), upgraded while a blocks/
// key names it, still publishes its records and stays connected; its
// claim is refused naming add-host.
func TestHostWithoutClaimGrantPublishes(t *testing.T) {
	ac := newAuthCluster(t, "hb")
	adm := ac.admin(t, "root", "rootpw")
	defer adm.Close()
	ctx := context.Background()
	k := newKeys("/test")
	if _, err := adm.cli.RoleRevokePermission(ctx, HostUser("hb"), k.hostBlocks("hb"), clientv3.GetPrefixRangeEnd(k.hostBlocks("hb"))); err != nil {
		t.Fatal(err)
	}
	blk := pfx("10.1.0.0/26")[0]
	if _, err := adm.cli.Put(ctx, k.block(testPool, blk), "hb"); err != nil { // as the version before claimed
		t.Fatal(err)
	}
	b := ac.host(t, "hb", "192.0.2.2")
	b.c.Rejoin(42)
	waitSynced(t, b.c, 5*time.Second)
	time.Sleep(time.Second) // rounds after the first
	if ok, why := b.c.Connected(); !ok {
		t.Fatalf("hb not connected: %s", why)
	}
	if _, err := b.c.ClaimBlock(ctx, testPool, blk); !errors.Is(err, rpctypes.ErrPermissionDenied) || !strings.Contains(err.Error(), "add-host --host-id hb") {
		t.Fatalf("claim without the grant: %v", err)
	}
}

func opErr[T any](_ T, err error) error { return err }

// TestClaimAfterListingLoses: a claim made from a listing loses to any
// claim of the block created after that listing: hb's, even with its
// blocks/ key deleted by a third party so that nothing else shows the
// change, or one a host wrote straight into its own range. The loser's
// claim goes again and blocks/ names the holder.
func TestClaimAfterListingLoses(t *testing.T) {
	_, hs := syncedHosts(t, "hb", "hc")
	b, c := hs[0], hs[1]
	ctx := context.Background()
	lease := int64(c.c.currentLease())
	for _, late := range []struct {
		what   string
		holder string
		do     func(blk netip.Prefix) error
	}{
		{"hb claims it, and its blocks/ key is deleted", "hb", func(blk netip.Prefix) error {
			if ok, err := b.c.ClaimBlock(ctx, testPool, blk); !ok || err != nil {
				return errors.Join(errors.New("hb's claim failed"), err)
			}
			return opErr(c.c.etcd().Delete(ctx, c.c.k.block(testPool, blk)))
		}},
		{"ha writes a claim of its own", "ha", func(blk netip.Prefix) error {
			return opErr(c.c.etcd().Put(ctx, c.c.k.hostBlock("ha", testPool, blk), ""))
		}},
	} {
		blk := pfx("10.1.0.0/26")[0]
		if late.holder == "ha" {
			blk = pfx("10.1.0.64/26")[0]
		}
		v, err := c.c.listBlocks(ctx, testPool)
		if err != nil {
			t.Fatal(err)
		}
		p := planClaim(v, "hc", blk, lease)
		if p.step != claimFree {
			t.Fatalf("block %s not free before: %+v", blk, p)
		}
		if err := late.do(blk); err != nil {
			t.Fatal(err)
		}
		if won, err := c.c.claimFrom(ctx, testPool, blk, v, lease); err != nil || won {
			t.Fatalf("after %s: hc's claim from the listing before won: %t %v", late.what, won, err)
		}
		holderSeen(t, blk, late.holder, late.what, b, c)
		if resp, err := c.c.etcd().Get(ctx, c.c.k.hostBlock("hc", testPool, blk)); err != nil || len(resp.Kvs) != 0 {
			t.Fatalf("after %s: hc's claim of %s is still there: %v %v", late.what, blk, resp, err)
		}
		if name := mustGet(t, c.c.etcd(), c.c.k.block(testPool, blk)); name != late.holder {
			t.Fatalf("after %s: blocks/ names %q, want the holder %s", late.what, name, late.holder)
		}
	}
}

// waitFor polls done until it says so, failing the test after within
// with what it last said.
func waitFor(t *testing.T, within time.Duration, done func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, state := done()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", within, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitHolder waits until h sees blk held by want.
func waitHolder(t *testing.T, h *testHost, blk netip.Prefix, want string, within time.Duration) {
	t.Helper()
	waitFor(t, within, func() (bool, string) {
		held, err := h.c.HeldBlocks(context.Background(), testPool)
		return err == nil && held[blk] == want, fmt.Sprintf("host %s sees %v (%v), want block %s held by %q", h.c.host, held, err, blk, want)
	})
}

// leaseGoneWithin waits until lease has expired.
func leaseGoneWithin(t *testing.T, cli *clientv3.Client, lease clientv3.LeaseID, within time.Duration) {
	t.Helper()
	waitFor(t, within, func() (bool, string) {
		resp, err := cli.TimeToLive(context.Background(), lease)
		return err == nil && resp.TTL == -1, fmt.Sprintf("lease %x still there: %v %v", lease, resp, err)
	})
}

// syncedHosts starts etcd and hosts ids (VTEPs 192.0.2.1, .2, ...) and
// waits until each has published.
func syncedHosts(t *testing.T, ids ...string) (*etcdtest.Server, []*testHost) {
	t.Helper()
	srv := etcdtest.Start(t)
	var out []*testHost
	for i, id := range ids {
		h := startHost(t, srv, id, fmt.Sprintf("192.0.2.%d", i+1))
		waitSynced(t, h.c, 5*time.Second)
		out = append(out, h)
	}
	return srv, out
}

// TestBlockClaimsFollowTheLease: a plugin restarted within the TTL keeps
// its claim past the expiry of its old lease (moved onto the new one), so
// with its blocks/ key deleted no one else can claim the block; a host
// back from a lapse (its claim went with its lease) claims its block
// again at once.
func TestBlockClaimsFollowTheLease(t *testing.T) {
	srv, hs := syncedHosts(t, "hb", "hc")
	b, c := hs[0], hs[1]
	ctx := context.Background()
	blk := pfx("10.1.0.0/26")[0]
	claims(t, b, blk, true, "a free block")
	old := b.c.currentLease()
	b.stop()
	b = startHost(t, srv, "hb", "192.0.2.1") // restarted: a new lease
	waitSynced(t, b.c, 5*time.Second)
	leaseGoneWithin(t, c.c.etcd(), old, testTTL+5*time.Second)
	if _, err := c.c.etcd().Delete(ctx, c.c.k.block(testPool, blk)); err != nil {
		t.Fatal(err)
	}
	holderSeen(t, blk, "hb", "the old lease expired", b, c)
	claims(t, c, blk, false, "the old lease expired and hb's blocks/ key was deleted")

	// A lapse: hb's loop stops for longer than the TTL, then runs again.
	claims(t, b, blk, true, "hb's blocks/ key was deleted") // names it again
	b.cancel()
	<-b.done
	leaseGoneWithin(t, c.c.etcd(), b.c.currentLease(), testTTL+5*time.Second)
	holderSeen(t, blk, "", "hb's lease lapsed", c)
	ctx2, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.c.Run(ctx2) }()
	t.Cleanup(func() { cancel(); <-done })
	waitHolder(t, c, blk, "hb", 5*time.Second)
}

// TestOlderHostsBlockClaimKept: during an upgrade, a block claimed by a
// host of the version before copies (a blocks/ key alone) is held by no one
// but cannot be claimed while that host lives; once it runs this version
// its claim gets its copy, and once it is gone the block can be claimed.
func TestOlderHostsBlockClaimKept(t *testing.T) {
	srv, hs := syncedHosts(t, "ho", "hc")
	o, c := hs[0], hs[1]
	ctx := context.Background()
	blk := pfx("10.1.0.0/26")[0]
	if _, err := o.c.etcd().Put(ctx, o.c.k.block(testPool, blk), "ho"); err != nil { // as the version before claims
		t.Fatal(err)
	}
	holderSeen(t, blk, "", "ho's claim without a copy", c)
	claims(t, c, blk, false, "ho's claim without a copy, ho alive")

	o.stop()
	o = startHost(t, srv, "ho", "192.0.2.1") // upgraded
	waitHolder(t, c, blk, "ho", 5*time.Second)
	claims(t, c, blk, false, "ho runs this version")

	o.stop()
	waitFor(t, testTTL+5*time.Second, func() (bool, string) {
		ok, err := c.c.ClaimBlock(ctx, testPool, blk)
		return ok && err == nil, fmt.Sprintf("the block of departed host ho not claimed: %t %v", ok, err)
	})
}

// TestBlockClaimsAtScale measures what claims cost at 1000 hosts holding
// 4 blocks in each of two pools (8,000 claims): a listing of one pool (every
// claim is read, keys only, and those of the other pool dropped), and a
// claim of a free block (a listing, a transaction, and the read of the
// claims created since the listing). Before claims, a listing read the
// pool's blocks/ keys alone: logged beside them.
func TestBlockClaimsAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 16,000 keys; skipped with -short")
	}
	_, hs := syncedHosts(t, "reader")
	r := hs[0].c
	ctx := context.Background()
	pools := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/14"), netip.MustParsePrefix("10.4.0.0/14")}
	for _, p := range pools {
		writeClaims(t, r, p, 4000)
	}
	pool := PoolKey(pools[0])
	timed := func(what string, f func(i int) error) time.Duration {
		var all []time.Duration
		for i := range 5 {
			start := time.Now()
			if err := f(i); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			all = append(all, time.Since(start))
		}
		slices.Sort(all)
		t.Logf("%s: median %v of 5 (%v to %v)", what, all[2].Round(time.Microsecond), all[0].Round(time.Microsecond), all[4].Round(time.Microsecond))
		return all[2]
	}
	timed("listing of blocks/ alone (before claims)", func(int) error {
		_, err := r.etcd().Get(ctx, r.k.blocks(pool), clientv3.WithPrefix())
		return err
	})
	list := timed("HeldBlocks", func(int) error {
		held, err := r.HeldBlocks(ctx, pool)
		if err == nil && len(held) != 4000 {
			err = fmt.Errorf("%d blocks held, want 4000", len(held))
		}
		return err
	})
	claimNth := func(n int) error {
		ok, err := r.ClaimBlock(ctx, pool, netip.PrefixFrom(nthAddr(pools[0].Addr(), n*64), 26))
		if err == nil && !ok {
			err = errors.New("refused")
		}
		return err
	}
	claim := timed("ClaimBlock of a free block (a listing, a transaction, a confirmation)", func(i int) error { return claimNth(4000 + i) })
	timed("HeldBlocks, then ClaimBlock of a free block (as the allocator claims)", func(i int) error {
		if _, err := r.HeldBlocks(ctx, pool); err != nil {
			return err
		}
		return claimNth(4010 + i)
	})
	if !raceDetector && (list > time.Second || claim > time.Second) {
		t.Errorf("a listing took %v and a claim %v, want under 1 s each", list, claim)
	}
}

// writeClaims gives hosts h0000, h0001, ... 4 blocks (/26) each of pool p,
// n in all, as ClaimBlock writes them (without a lease).
func writeClaims(t *testing.T, c *Client, p netip.Prefix, n int) {
	t.Helper()
	var ops []clientv3.Op
	for i := range n {
		host, blk := fmt.Sprintf("h%04d", i/4), netip.PrefixFrom(nthAddr(p.Addr(), i*64), 26)
		ops = append(ops, clientv3.OpPut(c.k.hostBlock(host, PoolKey(p), blk), ""), clientv3.OpPut(c.k.block(PoolKey(p), blk), host))
		if len(ops) == maxTxnOps || i == n-1 {
			if _, err := c.etcd().Txn(context.Background()).Then(ops...).Commit(); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
	}
}

// nthAddr is the address n after a (IPv4).
func nthAddr(a netip.Addr, n int) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) + uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// FuzzBlockView feeds forged claim keys and blocks/ keys to a listing of
// a pool: nothing crashes; a block's holder is always the host of its
// oldest claim in that pool, whatever blocks/ says; a block only blocks/
// names has no holder; and planClaim refuses exactly another host's block.
func FuzzBlockView(f *testing.F) {
	k := newKeys("")
	blk := netip.MustParsePrefix("10.1.0.0/26")
	f.Add(k.hostBlock("h1", testPool, blk), int64(5), k.hostBlock("h2", testPool, blk), int64(3), k.block(testPool, blk), "h1")
	f.Add(k.hostBlock("h1", "other", blk), int64(2), k.allHostBlocks()+"h2/"+testPool, int64(1), k.blocks(testPool)+"x", "h2")
	f.Add(k.hostBlock("h1", testPool, blk)+"/x", int64(9), k.hostBlock("me", testPool, blk), int64(9), k.block(testPool, blk), "me")
	f.Fuzz(func(t *testing.T, key1 string, rev1 int64, key2 string, rev2 int64, nameKey, nameVal string) {
		copies := []*mvccpb.KeyValue{{Key: []byte(key1), CreateRevision: rev1}, {Key: []byte(key2), CreateRevision: rev2}}
		names := []*mvccpb.KeyValue{{Key: []byte(nameKey), Value: []byte(nameVal), ModRevision: 7}}
		v, _ := k.blockView(testPool, 10, names, copies)
		oldest := map[netip.Prefix]blockCopy{}
		for _, kv := range copies {
			host, pool, b, err := k.parseHostBlock(string(kv.Key))
			if err != nil || pool != testPool {
				continue
			}
			if o, ok := oldest[b]; !ok || kv.CreateRevision < o.create || kv.CreateRevision == o.create && host < o.host {
				oldest[b] = blockCopy{host: host, create: kv.CreateRevision}
			}
		}
		for b, holder := range v.holders() {
			o, ok := oldest[b]
			if ok && holder != o.host || !ok && holder != "" {
				t.Fatalf("block %s held by %q; its oldest claim: %+v (%t)", b, holder, o, ok)
			}
			if refused := planClaim(v, "me", b, 1).step == claimRefused; refused != (ok && o.host != "me") {
				t.Fatalf("block %s: claim by me refused %t; its oldest claim: %+v (%t)", b, refused, o, ok)
			}
		}
		if len(v.holders()) < len(oldest) {
			t.Fatalf("holders %v miss claims %v", v.holders(), oldest)
		}
	})
}

// TestConcurrentClaimsOfOtherBlocks: 16 hosts claiming 4 blocks each at
// once, no two the same block, all succeed: claims of different blocks do
// not make each other fail (a compare over every claim would: then 14 of
// 64 failed after 16 rounds each).
func TestConcurrentClaimsOfOtherBlocks(t *testing.T) {
	ids := make([]string, 16)
	for i := range ids {
		ids[i] = fmt.Sprintf("h%02d", i)
	}
	_, hs := syncedHosts(t, ids...)
	start := time.Now()
	var wg sync.WaitGroup
	for i, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 4 {
				blk := netip.PrefixFrom(nthAddr(netip.MustParseAddr("10.0.0.0"), (i*4+j)*64), 26)
				if ok, err := h.c.ClaimBlock(context.Background(), testPool, blk); !ok || err != nil {
					t.Errorf("%s claims %s: %t %v", h.c.host, blk, ok, err)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("64 claims by 16 hosts at once in %v", time.Since(start).Round(time.Millisecond))
}

// TestClaimRightAfterLeaseLost: a claim made before the publishing loop
// has found its lease gone (a host back from a partition allocates at
// once) waits for the next lease and claims on it.
func TestClaimRightAfterLeaseLost(t *testing.T) {
	_, hs := syncedHosts(t, "hb")
	b, ctx := hs[0], context.Background()
	old := b.c.currentLease()
	if _, err := b.c.etcd().Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	blk := pfx("10.1.0.0/26")[0]
	claims(t, b, blk, true, "its lease was revoked")
	kv := mustKV(t, b.c.etcd(), b.c.k.hostBlock("hb", testPool, blk))
	if l := clientv3.LeaseID(kv.Lease); l == old || l != b.c.currentLease() {
		t.Fatalf("the claim is on lease %x, want the new one %x (the old was %x)", l, b.c.currentLease(), old)
	}
}
