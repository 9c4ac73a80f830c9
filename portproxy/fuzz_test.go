package portproxy

import (
	"fmt"
	"testing"
)

// FuzzParseRange: /proc/sys/net/ipv4/ip_local_port_range as the kernel (or a
// container runtime) may present it; a range is returned only when it is one.
func FuzzParseRange(f *testing.F) {
	f.Add("32768\t60999\n")
	f.Add("1 1")
	f.Add("0 65535")
	f.Add("65535 1024")
	f.Add("70000 80000")
	f.Fuzz(func(t *testing.T, s string) {
		lo, hi, err := parseRange(s)
		if err != nil {
			return
		}
		if lo == 0 || lo > hi {
			t.Fatalf("parseRange(%q) = %d-%d: not a port range", s, lo, hi)
		}
		if lo2, hi2, err := parseRange(fmt.Sprintf("%d\t%d\n", lo, hi)); err != nil || lo2 != lo || hi2 != hi {
			t.Fatalf("range %d-%d does not round-trip: %d-%d %v", lo, hi, lo2, hi2, err)
		}
	})
}
