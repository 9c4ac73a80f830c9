package ipam

import (
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"
)

var (
	mp = netip.MustParsePrefix
	ma = netip.MustParseAddr
)

func TestParsePool(t *testing.T) {
	tests := []struct {
		pool, sub string
		v6        bool
		wantPool  string
		wantRange string
		wantErr   string // substring; "" means success
	}{
		{pool: "10.1.0.0/24", wantPool: "10.1.0.0/24", wantRange: "10.1.0.0/24"},
		{pool: " 10.1.0.0/24 ", wantPool: "10.1.0.0/24", wantRange: "10.1.0.0/24"},
		{pool: "10.1.0.0/16", sub: "10.1.4.0/24", wantPool: "10.1.0.0/16", wantRange: "10.1.4.0/24"},
		{pool: "10.1.0.0/24", sub: "10.1.0.0/24", wantPool: "10.1.0.0/24", wantRange: "10.1.0.0/24"},
		{pool: "fd00:1::/64", v6: true, wantPool: "fd00:1::/64", wantRange: "fd00:1::/64"},
		{pool: "fd00:1::/64", sub: "fd00:1::100/120", v6: true, wantPool: "fd00:1::/64", wantRange: "fd00:1::100/120"},
		{pool: "10.1.0.5/24", wantErr: `pool "10.1.0.5/24" is not in canonical form (host bits are set): use 10.1.0.0/24`},
		{pool: "fd00:1::5/64", v6: true, wantErr: "use fd00:1::/64"},
		{pool: "10.1.0.0/24", sub: "10.1.0.130/25", wantErr: `ip range "10.1.0.130/25" is not in canonical form (host bits are set): use 10.1.0.128/25`},
		{pool: "10.1.0.0/24", sub: "10.2.0.0/25", wantErr: "ip range 10.2.0.0/25 is not inside pool 10.1.0.0/24"},
		{pool: "10.1.0.0/24", sub: "10.1.0.0/23", wantErr: "ip range 10.1.0.0/23 is not inside pool 10.1.0.0/24"},
		{pool: "10.1.0.0/24", sub: "fd00::/120", wantErr: "is not inside pool"},
		{pool: "10.1.0.0/24", sub: "10.1.0.0/32", wantErr: "ip range 10.1.0.0/32 holds no usable address of pool 10.1.0.0/24"},
		{pool: "10.1.0.0/24", sub: "10.1.0.255/32", wantErr: "holds no usable address"},
		{pool: "10.1.0.0/24", v6: true, wantErr: "pool 10.1.0.0/24 is IPv4 but docker asked for an IPv6 pool"},
		{pool: "fd00::/64", wantErr: "is IPv6 but docker asked for an IPv4 pool"},
		{pool: "10.1.0.0", wantErr: `invalid pool "10.1.0.0": not a CIDR prefix`},
		{pool: "banana", wantErr: `invalid pool "banana"`},
		{pool: "::ffff:10.0.0.0/104", v6: true, wantErr: "IPv4-mapped"},
		{pool: "10.1.0.0/24", sub: "x", wantErr: `invalid ip range "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.pool+"|"+tt.sub, func(t *testing.T) {
			pool, rng, err := parsePool(tt.pool, tt.sub, tt.v6)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("err %v is not ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if pool.String() != tt.wantPool || rng.String() != tt.wantRange {
				t.Errorf("got %s %s, want %s %s", pool, rng, tt.wantPool, tt.wantRange)
			}
		})
	}
}

func TestParseAddr(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.1.0.5", "10.1.0.5"},
		{"10.1.0.5/24", "10.1.0.5"},
		{"fd00::5", "fd00::5"},
		{"fd00::5/64", "fd00::5"},
		{"::ffff:10.1.0.5", "10.1.0.5"},
		{"fe80::1%eth0", ""},
		{"10.1.0", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, err := parseAddr(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("parseAddr(%q) = %s, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != ma(tt.want) {
			t.Errorf("parseAddr(%q) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestUsableBounds(t *testing.T) {
	tests := []struct {
		prefix, first, last string
		span                uint64
	}{
		{"10.1.0.0/24", "10.1.0.1", "10.1.0.254", 254},
		{"10.1.0.0/16", "10.1.0.1", "10.1.255.254", 65534},
		{"10.1.0.0/30", "10.1.0.1", "10.1.0.2", 2},
		{"10.1.0.0/31", "10.1.0.0", "10.1.0.1", 2},
		{"10.1.0.7/32", "10.1.0.7", "10.1.0.7", 1},
		{"0.0.0.0/0", "0.0.0.1", "255.255.255.254", 1<<32 - 2},
		{"fd00:1::/64", "fd00:1::1", "fd00:1::ffff:ffff:ffff:ffff", math.MaxUint64},
		{"fd00:1::/120", "fd00:1::1", "fd00:1::ff", 255},
		{"fd00:1::/127", "fd00:1::", "fd00:1::1", 2},
		{"fd00:1::9/128", "fd00:1::9", "fd00:1::9", 1},
		{"fd00::/48", "fd00::1", "fd00::ffff:ffff:ffff:ffff:ffff", math.MaxUint64}, // saturates
	}
	for _, tt := range tests {
		first, last := usableBounds(mp(tt.prefix))
		if first != ma(tt.first) || last != ma(tt.last) {
			t.Errorf("usableBounds(%s) = %s-%s, want %s-%s", tt.prefix, first, last, tt.first, tt.last)
		}
		if got := span(first, last); got != tt.span {
			t.Errorf("span(%s) = %d, want %d", tt.prefix, got, tt.span)
		}
	}
}

func TestRangeBounds(t *testing.T) {
	tests := []struct{ pool, rng, first, last string }{
		{"10.1.0.0/24", "10.1.0.0/24", "10.1.0.1", "10.1.0.254"},
		{"10.1.0.0/24", "10.1.0.0/25", "10.1.0.1", "10.1.0.127"},
		{"10.1.0.0/24", "10.1.0.128/25", "10.1.0.128", "10.1.0.254"},
		{"10.1.0.0/16", "10.1.4.0/24", "10.1.4.0", "10.1.4.255"},
		{"fd00::/64", "fd00::/120", "fd00::1", "fd00::ff"},
		{"fd00::/64", "fd00::100/120", "fd00::100", "fd00::1ff"},
	}
	for _, tt := range tests {
		first, last := rangeBounds(mp(tt.pool), mp(tt.rng))
		if first != ma(tt.first) || last != ma(tt.last) {
			t.Errorf("rangeBounds(%s, %s) = %s-%s, want %s-%s", tt.pool, tt.rng, first, last, tt.first, tt.last)
		}
	}
}

// addrSet is a taken-set for nextFree.
type addrSet map[netip.Addr]bool

func (s addrSet) taken(a netip.Addr) bool { return s[a] }

func takeRun(s addrSet, from netip.Addr, n int) addrSet {
	for range n {
		s[from] = true
		from = from.Next()
	}
	return s
}

func TestNextFree(t *testing.T) {
	tests := []struct {
		name          string
		pool          string
		cursor        string
		taken         addrSet
		tries         uint64
		want          string // "" means none found
		wantTriesUsed int
	}{
		{name: "v4 /24 empty", pool: "10.1.0.0/24", taken: addrSet{}, tries: 254, want: "10.1.0.1"},
		{name: "v4 /24 from cursor", pool: "10.1.0.0/24", cursor: "10.1.0.7", taken: addrSet{}, tries: 254, want: "10.1.0.7"},
		{name: "v4 /24 skips taken", pool: "10.1.0.0/24", cursor: "10.1.0.1",
			taken: addrSet{ma("10.1.0.1"): true, ma("10.1.0.2"): true}, tries: 254, want: "10.1.0.3"},
		{name: "wraps around", pool: "10.1.0.0/24", cursor: "10.1.0.253",
			taken: addrSet{ma("10.1.0.253"): true, ma("10.1.0.254"): true}, tries: 254, want: "10.1.0.1"},
		{name: "cursor outside restarts", pool: "10.1.0.0/24", cursor: "10.9.0.0", taken: addrSet{}, tries: 254, want: "10.1.0.1"},
		{name: "cursor other family restarts", pool: "10.1.0.0/24", cursor: "fd00::1", taken: addrSet{}, tries: 254, want: "10.1.0.1"},
		{name: "/30 full", pool: "10.1.0.0/30",
			taken: addrSet{ma("10.1.0.1"): true, ma("10.1.0.2"): true}, tries: 2, want: ""},
		{name: "/31 both usable", pool: "10.1.0.0/31", cursor: "10.1.0.1", taken: addrSet{}, tries: 2, want: "10.1.0.1"},
		{name: "/32 single", pool: "10.1.0.9/32", taken: addrSet{}, tries: 1, want: "10.1.0.9"},
		{name: "/32 taken", pool: "10.1.0.9/32", taken: addrSet{ma("10.1.0.9"): true}, tries: 1, want: ""},
		{name: "/16 one free left behind cursor", pool: "10.1.0.0/16", cursor: "10.1.200.0",
			taken: takeRun(takeRun(addrSet{}, ma("10.1.0.1"), 300), ma("10.1.1.46"), 65534-301), tries: 65534, want: "10.1.1.45"},
		{name: "/16 exhausted", pool: "10.1.0.0/16", taken: takeRun(addrSet{}, ma("10.1.0.1"), 65534), tries: 65534, want: ""},
		{name: "v6 /120 wraps", pool: "fd00::/120", cursor: "fd00::ff",
			taken: addrSet{ma("fd00::ff"): true}, tries: 2, want: "fd00::1"},
		{name: "v6 /64 from cursor", pool: "fd00::/64", cursor: "fd00::1:0",
			taken: takeRun(addrSet{}, ma("fd00::1:0"), 1000), tries: 1001, want: "fd00::1:3e8"},
		{name: "v6 /64 wraps at the top", pool: "fd00::/64", cursor: "fd00::ffff:ffff:ffff:fffe",
			taken: addrSet{ma("fd00::ffff:ffff:ffff:fffe"): true, ma("fd00::ffff:ffff:ffff:ffff"): true}, tries: 3, want: "fd00::1"},
		{name: "v6 /64 bounded tries", pool: "fd00::/64", taken: takeRun(addrSet{}, ma("fd00::1"), 10), tries: 10, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, last := usableBounds(mp(tt.pool))
			var cursor netip.Addr
			if tt.cursor != "" {
				cursor = ma(tt.cursor)
			}
			looked := uint64(0)
			got, ok := nextFree(first, last, cursor, tt.tries, func(a netip.Addr) bool { looked++; return tt.taken.taken(a) })
			if looked > tt.tries {
				t.Errorf("looked at %d addresses, bound %d", looked, tt.tries)
			}
			if tt.want == "" {
				if ok {
					t.Fatalf("got %s, want none", got)
				}
				return
			}
			if !ok || got != ma(tt.want) {
				t.Fatalf("got %s %t, want %s", got, ok, tt.want)
			}
		})
	}
}

func TestLastAddr(t *testing.T) {
	tests := []struct{ prefix, want string }{
		{"10.1.0.0/24", "10.1.0.255"},
		{"10.1.0.0/13", "10.7.255.255"},
		{"10.1.2.3/32", "10.1.2.3"},
		{"0.0.0.0/0", "255.255.255.255"},
		{"fd00::/64", "fd00::ffff:ffff:ffff:ffff"},
		{"fd00::/61", "fd00:0:0:7:ffff:ffff:ffff:ffff"},
	}
	for _, tt := range tests {
		if got := lastAddr(mp(tt.prefix)); got != ma(tt.want) {
			t.Errorf("lastAddr(%s) = %s, want %s", tt.prefix, got, tt.want)
		}
	}
}

func TestFirstFreeSubnet(t *testing.T) {
	tests := []struct {
		name string
		base string
		size int
		used []string
		want string
	}{
		{name: "empty", base: "10.212.0.0/14", size: 24, want: "10.212.0.0/24"},
		{name: "skips held", base: "10.212.0.0/14", size: 24, used: []string{"10.212.0.0/24", "10.212.1.0/24"}, want: "10.212.2.0/24"},
		{name: "small route blocks candidate", base: "10.212.0.0/14", size: 24, used: []string{"10.212.0.77/32"}, want: "10.212.1.0/24"},
		{name: "large blocker skipped at once", base: "10.212.0.0/14", size: 24, used: []string{"10.212.0.0/15"}, want: "10.214.0.0/24"},
		{name: "blocker covering base", base: "10.212.0.0/14", size: 24, used: []string{"10.0.0.0/8"}, want: ""},
		{name: "other family ignored", base: "10.212.0.0/14", size: 24, used: []string{"fd00::/8"}, want: "10.212.0.0/24"},
		{name: "full", base: "10.212.0.0/23", size: 24, used: []string{"10.212.0.0/24", "10.212.1.0/24"}, want: ""},
		{name: "top of address space", base: "255.255.255.0/24", size: 25, used: []string{"255.255.255.0/24"}, want: ""},
		{name: "v6 skips a /56", base: "fd12:3456:789a::/48", size: 64, used: []string{"fd12:3456:789a::/56"}, want: "fd12:3456:789a:100::/64"},
		{name: "size smaller than base", base: "10.212.0.0/14", size: 8, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var used []netip.Prefix
			for _, u := range tt.used {
				used = append(used, mp(u))
			}
			got, ok := firstFreeSubnet(mp(tt.base), tt.size, used)
			if tt.want == "" {
				if ok {
					t.Fatalf("got %s, want none", got)
				}
				return
			}
			if !ok || got != mp(tt.want) {
				t.Fatalf("got %s %t, want %s", got, ok, tt.want)
			}
		})
	}
}

func TestPickDefault(t *testing.T) {
	defaults := []DefaultPool{DefaultPoolV4}
	routes := []netip.Prefix{mp("0.0.0.0/0"), mp("10.212.0.0/24"), mp("192.168.1.0/24")}
	held := []netip.Prefix{mp("10.212.1.0/24")}
	got, err := pickDefault(defaults, false, held, routes)
	if err != nil || got != mp("10.212.2.0/24") {
		t.Fatalf("pickDefault = %s, %v; want 10.212.2.0/24", got, err)
	}
	_, err = pickDefault(defaults, false, nil, []netip.Prefix{mp("10.0.0.0/8")})
	if !errors.Is(err, ErrNoDefaultPool) || !strings.Contains(err.Error(), "/24 of 10.212.0.0/14") {
		t.Fatalf("err = %v, want ErrNoDefaultPool naming the range", err)
	}
	if _, err := pickDefault(nil, true, nil, nil); !errors.Is(err, ErrNoDefaultPool) {
		t.Fatalf("no defaults: err = %v", err)
	}
}

func TestPoolID(t *testing.T) {
	tests := []struct {
		space, pool, rng, id string
	}{
		{"vxbridge-local", "10.1.0.0/24", "10.1.0.0/24", "vxbridge-local/10.1.0.0/24"},
		{"vxbridge-local", "10.1.0.0/16", "10.1.4.0/24", "vxbridge-local/10.1.0.0/16/10.1.4.0/24"},
		{"vxbridge-global", "fd00:1::/64", "fd00:1::/120", "vxbridge-global/fd00:1::/64/fd00:1::/120"},
	}
	for _, tt := range tests {
		id := formatPoolID(tt.space, mp(tt.pool), mp(tt.rng))
		if id != tt.id {
			t.Errorf("formatPoolID = %q, want %q", id, tt.id)
		}
		space, pool, rng, err := parsePoolID(id)
		if err != nil || space != tt.space || pool != mp(tt.pool) || rng != mp(tt.rng) {
			t.Errorf("parsePoolID(%q) = %q %s %s %v", id, space, pool, rng, err)
		}
	}
	for _, bad := range []string{"", "x", "/10.1.0.0/24", "s/10.1.0.0/24/x", "s/10.1.0.5/24", "s/a/b/c/10.1.0.0/24", "s/10.1.0.0/24/10.1.0.0/24/x"} {
		if _, _, _, err := parsePoolID(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("parsePoolID(%q) err = %v, want ErrInvalid", bad, err)
		}
	}
}
