package ipam

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"strings"
)

// DefaultPool is a range docker networks created without --subnet get their
// pool from: Base is carved into prefixes of length Size, first free first
// (the shape of dockerd's "default-address-pools").
type DefaultPool struct {
	Base netip.Prefix
	Size int
}

func (p DefaultPool) String() string { return fmt.Sprintf("/%d of %s", p.Size, p.Base) }

// DefaultPoolV4 is 10.212.0.0/14 in /24s: 1024 networks of 254 addresses.
// It stays clear of docker's own defaults (172.17-31/16, 192.168/16), the
// usual Kubernetes ranges (10.96/12, 10.244/16), AWS's default VPC
// (172.31/16) and CGNAT space used by Tailscale (100.64/10); it is in
// 10/8, so a site using all of 10/8 should set its own (host routes that
// overlap are skipped anyway).
var DefaultPoolV4 = DefaultPool{Base: netip.MustParsePrefix("10.212.0.0/14"), Size: 24}

// metaULAPrefix is the store meta key of the IPv6 default /48: a ULA
// (RFC 4193) whose 40-bit global id is drawn once per host and kept, so
// default IPv6 pools are the same across restarts.
const metaULAPrefix = "ula-prefix"

// defaultV6Size carves the ULA /48 into /64s, the size SLAAC and most
// tooling expect of a link.
const defaultV6Size = 64

func ulaPrefix(st Store) (netip.Prefix, error) {
	s, err := st.Meta(metaULAPrefix)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("read meta %s: %w", metaULAPrefix, err)
	}
	if s != "" {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Bits() != 48 || p != p.Masked() || !netip.MustParsePrefix("fd00::/8").Contains(p.Addr()) {
			return netip.Prefix{}, fmt.Errorf("stored meta %s %q is not a ULA /48 (fdXX:XXXX:XXXX::/48)", metaULAPrefix, s)
		}
		return p, nil
	}
	p := randomULA()
	if err := st.SetMeta(metaULAPrefix, p.String()); err != nil {
		return netip.Prefix{}, fmt.Errorf("save meta %s: %w", metaULAPrefix, err)
	}
	return p, nil
}

// randomULA returns fdXX:XXXX:XXXX::/48 with a random 40-bit global id.
func randomULA() netip.Prefix {
	var b [16]byte
	b[0] = 0xfd
	rand.Read(b[1:6]) // never fails since Go 1.24
	return netip.PrefixFrom(netip.AddrFrom16(b), 48)
}

func validateDefaultPools(pools []DefaultPool, v6 bool) error {
	for _, p := range pools {
		switch {
		case !p.Base.IsValid() || p.Base != p.Base.Masked():
			return errorf(ErrInvalid, "invalid default pool base %s: want a canonical prefix", p.Base)
		case p.Base.Addr().Is6() != v6:
			return errorf(ErrInvalid, "default pool base %s is not %s", p.Base, familyName(v6))
		case p.Size < p.Base.Bits() || p.Size > p.Base.Addr().BitLen():
			return errorf(ErrInvalid, "default pool size /%d does not fit in base %s", p.Size, p.Base)
		}
	}
	return nil
}

func validateSpace(what, name string) error {
	if name == "" || strings.Contains(name, "/") {
		return errorf(ErrInvalid, "invalid %s address space %q: want a non-empty name without \"/\"", what, name)
	}
	return nil
}

// pickDefault returns the first default pool of the family that overlaps
// no held pool (of any address space: both end up as bridges on this host)
// and no host route. Docker re-asks when a pool it is given overlaps a host
// route and holds the one it refused, so skipping routes here saves round
// trips and never returns the same overlapping pool twice.
func pickDefault(defaults []DefaultPool, v6 bool, held, routes []netip.Prefix) (netip.Prefix, error) {
	used := append([]netip.Prefix(nil), held...)
	for _, r := range routes {
		if r.Bits() > 0 { // a default route overlaps everything and blocks nothing
			used = append(used, r.Masked())
		}
	}
	for _, dp := range defaults {
		if p, ok := firstFreeSubnet(dp.Base, dp.Size, used); ok {
			return p, nil
		}
	}
	if len(defaults) == 0 {
		return netip.Prefix{}, errorf(ErrNoDefaultPool, "no default %s pools are configured; give the network a --subnet", familyName(v6))
	}
	names := make([]string, len(defaults))
	for i, dp := range defaults {
		names[i] = dp.String()
	}
	return netip.Prefix{}, errorf(ErrNoDefaultPool,
		"no free default %s pool: every %s overlaps a pool in use or a host route; give the network a --subnet",
		familyName(v6), strings.Join(names, ", "))
}
