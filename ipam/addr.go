package ipam

// Pure address maths on net/netip: parsing and validating pools, usable
// bounds, the free-address scan and default-pool carving. Nothing here
// touches the store; every function is family-generic (IPv4 and IPv6 go
// through the same code).

import (
	"encoding/binary"
	"math"
	"math/bits"
	"net/netip"
	"strings"
)

// parsePrefix parses a pool or sub-pool given by docker. It must be in
// canonical form: "10.1.0.5/24" is refused rather than masked, as docker's
// own IPAM does, because silently moving the user's subnet hides a typo.
func parsePrefix(what, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, errorf(ErrInvalid, "invalid %s %q: not a CIDR prefix such as 10.1.0.0/24 or fd00:1::/64", what, s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, errorf(ErrInvalid, "invalid %s %q: an IPv4-mapped IPv6 prefix, write it as IPv4", what, s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, errorf(ErrInvalid, "%s %q is not in canonical form (host bits are set): use %s", what, s, m)
	}
	return p, nil
}

// parsePool validates a RequestPool's Pool and SubPool. sub may be "": the
// range is then the whole pool. v6 is the family docker asked for.
func parsePool(pool, sub string, v6 bool) (prefix, rng netip.Prefix, err error) {
	if prefix, err = parsePrefix("pool", pool); err != nil {
		return prefix, rng, err
	}
	if prefix.Addr().Is6() != v6 {
		return netip.Prefix{}, rng, errorf(ErrInvalid, "pool %s is %s but docker asked for an %s pool", prefix, familyName(prefix.Addr().Is6()), familyName(v6))
	}
	if sub == "" {
		return prefix, prefix, nil
	}
	if rng, err = parsePrefix("ip range", sub); err != nil {
		return prefix, rng, err
	}
	if rng.Bits() < prefix.Bits() || !prefix.Contains(rng.Addr()) {
		return prefix, rng, errorf(ErrInvalid, "ip range %s is not inside pool %s", rng, prefix)
	}
	if first, last := rangeBounds(prefix, rng); first.Compare(last) > 0 {
		return prefix, rng, errorf(ErrInvalid, "ip range %s holds no usable address of pool %s", rng, prefix)
	}
	return prefix, rng, nil
}

// parseAddr accepts a bare address ("10.1.0.5") or CIDR ("10.1.0.5/24"),
// the prefix length being ignored: docker sends bare IPs but other callers
// echo the CIDR form they were given.
func parseAddr(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr().Unmap(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, errorf(ErrInvalid, "invalid address %q: not an IP address", s)
	}
	return a.Unmap(), nil
}

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// lastAddr is the highest address of p (the broadcast address for IPv4).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		switch host := (i+1)*8 - p.Bits(); {
		case host >= 8:
			b[i] = 0xff
		case host > 0:
			b[i] |= byte(1)<<host - 1
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// usableBounds returns the first and last address of p that may be given to
// an interface. IPv4 loses the network and broadcast addresses, IPv6 the
// subnet-router anycast address (the all-zero host part, RFC 4291 2.6.1).
// Point-to-point prefixes (/31, /127: RFC 3021, RFC 6164) and single hosts
// (/32, /128) use every address.
func usableBounds(p netip.Prefix) (first, last netip.Addr) {
	first, last = p.Masked().Addr(), lastAddr(p)
	if p.Addr().BitLen()-p.Bits() < 2 {
		return first, last
	}
	first = first.Next()
	if p.Addr().Is4() {
		last = last.Prev()
	}
	return first, last
}

// rangeBounds is the part of rng that is usable in pool: an ip range that
// starts at the pool's network address still may not hand that one out,
// while the range's own first and last addresses are ordinary pool members.
// first > last means the range holds no usable address.
func rangeBounds(pool, rng netip.Prefix) (first, last netip.Addr) {
	pf, pl := usableBounds(pool)
	first, last = rng.Masked().Addr(), lastAddr(rng)
	if first.Compare(pf) < 0 {
		first = pf
	}
	if last.Compare(pl) > 0 {
		last = pl
	}
	return first, last
}

// inBounds reports whether first <= a <= last (same family).
func inBounds(a, first, last netip.Addr) bool {
	return a.BitLen() == first.BitLen() && a.Compare(first) >= 0 && a.Compare(last) <= 0
}

// span is the number of addresses in [first, last], saturating at
// math.MaxUint64 (a /64 range holds 2^64).
func span(first, last netip.Addr) uint64 {
	f, l := first.As16(), last.As16()
	lo, borrow := bits.Sub64(binary.BigEndian.Uint64(l[8:]), binary.BigEndian.Uint64(f[8:]), 0)
	hi, _ := bits.Sub64(binary.BigEndian.Uint64(l[:8]), binary.BigEndian.Uint64(f[:8]), borrow)
	if hi != 0 || lo == math.MaxUint64 {
		return math.MaxUint64
	}
	return lo + 1
}

// following is the address after a in [first, last], wrapping to first.
func following(a, first, last netip.Addr) netip.Addr {
	if a == last || !inBounds(a, first, last) {
		return first
	}
	return a.Next()
}

// nextFree scans [first, last] from cursor (wrapping after last) for an
// address taken reports false, looking at no more than tries addresses. An
// invalid cursor or one outside the bounds starts at first. Callers pass
// tries = min(span, taken+1): among taken+1 distinct addresses one is free,
// so the scan costs O(taken) even in a /64 and never walks the whole range.
func nextFree(first, last, cursor netip.Addr, tries uint64, taken func(netip.Addr) bool) (netip.Addr, bool) {
	a := cursor
	if !inBounds(a, first, last) {
		a = first
	}
	for range tries {
		if !taken(a) {
			return a, true
		}
		a = following(a, first, last)
	}
	return netip.Addr{}, false
}

// firstFreeSubnet returns the first size-bit prefix inside base that
// overlaps none of used. A blocker larger than a candidate is skipped in one
// step, so a /48 carved into /64s is not walked one /64 at a time past a
// held /56.
func firstFreeSubnet(base netip.Prefix, size int, used []netip.Prefix) (netip.Prefix, bool) {
	if size < base.Bits() || size > base.Addr().BitLen() {
		return netip.Prefix{}, false
	}
	cand := netip.PrefixFrom(base.Masked().Addr(), size)
	for base.Contains(cand.Addr()) {
		end := lastAddr(cand)
		blocked := false
		for _, u := range used {
			if u.Overlaps(cand) {
				blocked = true
				if ue := lastAddr(u); ue.Compare(end) > 0 {
					end = ue
				}
			}
		}
		if !blocked {
			return cand, true
		}
		next := end.Next()
		if !next.IsValid() { // ran off the top of the address space
			break
		}
		cand = netip.PrefixFrom(next, size).Masked()
	}
	return netip.Prefix{}, false
}

// overlapping returns the first of held that overlaps p.
func overlapping(p netip.Prefix, held []netip.Prefix) (netip.Prefix, bool) {
	for _, h := range held {
		if h.Overlaps(p) {
			return h, true
		}
	}
	return netip.Prefix{}, false
}
