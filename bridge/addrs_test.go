package bridge

import (
	"net"
	"net/netip"
	"testing"
)

func TestIsStaleAddr(t *testing.T) {
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("fd00::1/64")}
	for _, tc := range []struct {
		have  string
		stale bool
	}{
		{"10.0.0.1/24", false},
		{"fd00::1/64", false},
		{"10.0.0.1/16", true}, // same address, other prefix length
		{"10.0.1.1/24", true},
		{"fd00::2/64", true},
		{"fe80::1/64", false},     // kernel's link-local
		{"169.254.1.1/16", false}, // link-local, not ours either
	} {
		if got := isStaleAddr(netip.MustParsePrefix(tc.have), want); got != tc.stale {
			t.Errorf("isStaleAddr(%s) = %t, want %t", tc.have, got, tc.stale)
		}
	}
}

func TestPrefixRoundTrip(t *testing.T) {
	for _, s := range []string{"10.0.0.1/24", "192.168.1.7/32", "fd00:1::1/64", "2001:db8::5/128"} {
		p := netip.MustParsePrefix(s)
		got, ok := prefixOf(ipNet(p))
		if !ok || got != p {
			t.Errorf("prefixOf(ipNet(%s)) = %s, %t", p, got, ok)
		}
	}
	// The kernel reports IPv4 addresses as 16-byte IPs.
	v4in16 := &net.IPNet{IP: net.ParseIP("10.0.0.1"), Mask: net.CIDRMask(24, 32)}
	if got, ok := prefixOf(v4in16); !ok || got != netip.MustParsePrefix("10.0.0.1/24") {
		t.Errorf("prefixOf(16-byte v4) = %s, %t", got, ok)
	}
	if _, ok := prefixOf(&net.IPNet{IP: net.ParseIP("fd00::1"), Mask: net.CIDRMask(24, 32)}); ok {
		t.Error("prefixOf accepted a v6 address with a v4 mask")
	}
	if _, ok := prefixOf(nil); ok {
		t.Error("prefixOf(nil) ok")
	}
}

func TestRandomMAC(t *testing.T) {
	mac, err := randomMAC()
	if err != nil {
		t.Fatal(err)
	}
	if len(mac) != 6 || mac[0]&0x01 != 0 || mac[0]&0x02 == 0 {
		t.Fatalf("randomMAC() = %s, want 6-byte locally administered unicast", mac)
	}
	if err := validateMAC(mac); err != nil {
		t.Fatal(err)
	}
}
