package ipam

import (
	"net/netip"
	"testing"
)

// FuzzParsePool feeds RequestPool/RequestAddress inputs through the parsers
// and checks the invariants the allocator relies on.
func FuzzParsePool(f *testing.F) {
	f.Add("10.1.0.0/24", "", false, "10.1.0.5")
	f.Add("10.1.0.0/16", "10.1.4.0/24", false, "10.1.0.5/16")
	f.Add("10.1.0.5/24", "", false, "")
	f.Add("10.1.0.0/31", "10.1.0.1/32", false, "10.1.0.1")
	f.Add("fd00:1::/64", "fd00:1::100/120", true, "fd00:1::1")
	f.Add("::ffff:10.0.0.0/104", "", true, "::ffff:1.2.3.4")
	f.Add("0.0.0.0/0", "255.255.255.255/32", false, "fe80::1%eth0")
	f.Fuzz(func(t *testing.T, poolS, subS string, v6 bool, addrS string) {
		if a, err := parseAddr(addrS); err == nil && !a.IsValid() {
			t.Fatalf("parseAddr(%q) returned an invalid address without error", addrS)
		}
		pool, rng, err := parsePool(poolS, subS, v6)
		if err != nil {
			return
		}
		if pool != pool.Masked() || rng != rng.Masked() || pool.Addr().Is6() != v6 {
			t.Fatalf("parsePool(%q, %q) = %s %s: not canonical or wrong family", poolS, subS, pool, rng)
		}
		if rng.Bits() < pool.Bits() || !pool.Contains(rng.Addr()) {
			t.Fatalf("range %s not inside pool %s", rng, pool)
		}
		pf, pl := usableBounds(pool)
		first, last := rangeBounds(pool, rng)
		if first.Compare(last) > 0 || !inBounds(first, pf, pl) || !inBounds(last, pf, pl) {
			t.Fatalf("range bounds %s-%s outside usable %s-%s of %s", first, last, pf, pl, pool)
		}
		if s := span(first, last); s == 0 {
			t.Fatalf("span of %s-%s is 0", first, last)
		}
		if got := following(last, first, last); got != first {
			t.Fatalf("following(last) = %s, want wrap to %s", got, first)
		}
		a, ok := nextFree(first, last, netip.Addr{}, 1, func(netip.Addr) bool { return false })
		if !ok || a != first {
			t.Fatalf("nextFree on empty range = %s %t", a, ok)
		}
		id := formatPoolID("space", pool, rng)
		space, p2, r2, err := parsePoolID(id)
		if err != nil || space != "space" || p2 != pool || r2 != rng {
			t.Fatalf("pool id %q does not round-trip: %q %s %s %v", id, space, p2, r2, err)
		}
	})
}

// FuzzParsePoolID: pool ids come back from docker in every address call; any
// string is refused or decodes to a pool whose own id decodes the same (an
// id in another spelling, "0::/0" for "::/0", is simply not found).
func FuzzParsePoolID(f *testing.F) {
	f.Add("vxbridge-local/10.1.0.0/24")
	f.Add("vxbridge-global/10.5.0.0/16/10.5.1.0/24")
	f.Add("vxbridge-local/fd00:1::/64/fd00:1::100/120")
	f.Add("x//")
	f.Add("/10.0.0.0/8/")
	f.Fuzz(func(t *testing.T, id string) {
		space, pool, rng, err := parsePoolID(id)
		if err != nil {
			return
		}
		canon := formatPoolID(space, pool, rng)
		s2, p2, r2, err := parsePoolID(canon)
		if err != nil || s2 != space || p2 != pool || r2 != rng {
			t.Fatalf("pool id %q decodes to %q %s %s, whose id %q decodes to %q %s %s %v", id, space, pool, rng, canon, s2, p2, r2, err)
		}
	})
}
