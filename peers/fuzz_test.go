package peers

import (
	"net/netip"
	"testing"

	"github.com/vxbridge/vxbridge/cluster"
)

// FuzzForgedRecords feeds records anyone with etcd access could write
// (any MAC, addresses, VTEP) into a network's table beside a real one: no
// input may crash the host, take the real endpoint's address or MAC from
// it, or program an address outside the subnets, a gateway or a VTEP
// vxbridge must not send to.
func FuzzForgedRecords(f *testing.F) {
	f.Add("h2", "192.0.2.12", "00:00:00:00:00:01", "10.90.0.5", "fd90::5", int64(1))
	f.Add("self", "127.0.0.1", "76:78:0a:5a:00:05", "10.90.0.1", "", int64(9))
	f.Add("h2", "fe80::1", "ff:ff:ff:ff:ff:ff", "10.91.0.5", "::ffff:10.90.0.9", int64(-5))
	f.Fuzz(func(t *testing.T, host, vtep, mac, ip4, ip6 string, rev int64) {
		if host == "h1" {
			// Rewriting another host's own records is stopped before
			// they reach the table (per-host etcd identities and signed
			// records), not by it.
			return
		}
		tb := newTable(testCfg)
		realEP := endpoint("h1", "e1", "76:78:0a:5a:00:05", "10.90.0.5", 1)
		tb.apply(cluster.Change{Kind: cluster.MemberSet, Host: "h1", Member: member("h1", "192.0.2.11")})
		tb.apply(cluster.Change{Kind: cluster.EndpointSet, Host: "h1", ID: "e1", Endpoint: realEP})
		v, _ := netip.ParseAddr(vtep)
		a4, _ := netip.ParseAddr(ip4)
		a6, _ := netip.ParseAddr(ip6)
		if rev <= 1 {
			rev = 2 // etcd revisions grow: a forged record is always newer than the real one
		}
		tb.apply(cluster.Change{Kind: cluster.MemberSet, Host: host, Member: cluster.Member{Host: host, VTEP: v}})
		tb.apply(cluster.Change{Kind: cluster.EndpointSet, Host: host, ID: "x", Endpoint: cluster.Endpoint{ID: "x", Host: host, MAC: mac,
			IPv4: a4, IPv6: a6, Rev: rev}})
		d := tb.desired()
		for _, e := range d.Neigh {
			if !tb.validIP(e.IP) {
				t.Fatalf("programmed %s: outside the subnets or a gateway", e.IP)
			}
			if e.IP == realEP.IPv4 && e.MAC != "76:78:0a:5a:00:05" {
				t.Fatalf("the real endpoint's address went to %s", e.MAC)
			}
		}
		for _, e := range d.FDB {
			if !tb.usableVTEP(e.Dst) {
				t.Fatalf("fdb %s -> %s: a VTEP vxbridge must not send to", e.MAC, e.Dst)
			}
			if e.MAC == "76:78:0a:5a:00:05" && e.Dst != netip.MustParseAddr("192.0.2.11") {
				t.Fatalf("the real endpoint's MAC now goes to %s", e.Dst)
			}
		}
	})
}
