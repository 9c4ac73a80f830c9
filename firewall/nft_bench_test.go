package firewall

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

// BenchmarkFirewallPorts measures what publishing ports costs each backend
// with many ports already published on the host (docs/firewall-backends.md):
// publish-unpublish is EnsurePorts then RemovePorts of one more endpoint
// (what a container with -p adds to figure 2's lifecycle: the rules at Join,
// their removal and the conntrack flush at Leave); reconcile-unchanged is
// the periodic Reconcile finding nothing to do; read is the IPv4 listing
// every operation starts with. Each backend works in a
// fresh network namespace.
//
//	sudo go test -run '^$' -bench FirewallPorts -benchtime 40x ./firewall/
func BenchmarkFirewallPorts(b *testing.B) {
	for _, backend := range []Backend{BackendLegacy, BackendNFT, BackendNFTables} {
		for _, published := range []int{0, 1000} {
			b.Run(fmt.Sprintf("%s/ports=%d", backend, published), func(b *testing.B) {
				benchPorts(b, backend, published)
			})
		}
	}
}

func benchPorts(b *testing.B, backend Backend, published int) {
	ns := nstest.New(b)
	var fw *Firewall
	if err := ns.Do(func() (err error) { fw, err = NewWithBackend(backend); return err }); err != nil {
		b.Skipf("%s: %v", backend, err)
	}
	n := Network{ID: "n1", Bridge: "vxb-n1", Subnets: []netip.Prefix{prefix("10.1.0.0/16")}, Masquerade: true, ICC: true}
	ports := manyPorts(n, published)
	if err := ns.Do(func() error { return fw.Reconcile([]Network{n}, ports, ownsAll) }); err != nil {
		b.Fatal(err)
	}
	one := manyPorts(n, published+1)[published]
	b.Run("publish-unpublish", func(b *testing.B) {
		for b.Loop() {
			if err := ns.Do(func() error {
				if err := fw.EnsurePorts(one); err != nil {
					return err
				}
				return fw.RemovePorts(one)
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("read", func(b *testing.B) { // what every operation starts with
		for b.Loop() {
			if err := ns.Do(func() error { _, err := fw.families[0].read(); return err }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reconcile-unchanged", func(b *testing.B) {
		for b.Loop() {
			if err := ns.Do(func() error { return fw.Reconcile([]Network{n}, ports, ownsAll) }); err != nil {
				b.Fatal(err)
			}
		}
	})
}
