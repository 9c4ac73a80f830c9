package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

func newNFTFirewall(t *testing.T, ns *nstest.NS) *Firewall {
	t.Helper()
	var fw *Firewall
	do(t, ns, func() (err error) {
		fw, err = NewWithBackend(BackendNFTables)
		return err
	})
	return fw
}

// nftLines lists vxbridge's nftables table of both families as plan.go
// reads it: "ip6 " before the IPv6 lines; nil when neither table exists.
func nftLines(t *testing.T, ns *nstest.NS) []string {
	t.Helper()
	var out []string
	for _, ipv6 := range []bool{false, true} {
		tb := &nftTable{ipv6: ipv6, timeout: nftTimeout}
		var l *nftListing
		do(t, ns, func() (err error) { l, err = tb.list(); return err })
		if !l.exists {
			continue
		}
		st := l.state()
		for _, table := range []string{tableFilter, tableNat, tableMangle} {
			for chain, rules := range st[table].rules {
				for _, r := range rules {
					out = append(out, map[bool]string{false: "", true: "ip6 "}[ipv6]+table+" "+strings.TrimPrefix(r, "-A "+chain+" ")+" @"+chain)
				}
			}
		}
		if len(out) == 0 {
			out = append(out, "(empty table)")
		}
	}
	slices.Sort(out)
	return out
}

// The nftables backend keeps the same rules as the iptables one, in its
// own table (a cross-host network's DNS redirects and host SNAT too):
// idempotent, stray rules removed, and nothing left once the last network
// is gone.
func TestKernelNFTLifecycle(t *testing.T) {
	ns := nstest.New(t)
	fw := newNFTFirewall(t, ns)
	// Docker's ids are 64 hex digits: a port rule's comment carries two.
	id := strings.Repeat("0123456789abcdef", 4)
	// A cross-host network's: DNS redirects, and SNAT to this host's own
	// addresses of the network.
	n := Network{ID: id, Bridge: "vxb-n1", Subnets: []netip.Prefix{prefix("10.1.0.0/24"), prefix("fd00:1::/64")}, Masquerade: true, ICC: false,
		Gateways: []netip.Addr{addr("10.1.0.1"), addr("fd00:1::1")}, HostAddrs: []netip.Addr{addr("10.1.0.250"), addr("fd00:1::fa")}, NamesPort: 5335}
	p := testPorts(strings.Repeat("fedcba9876543210", 4))
	p.NetworkID = id
	do(t, ns, func() error { return fw.EnsureNetwork(n) })
	do(t, ns, func() error { return fw.EnsurePorts(p) })
	got := nftLines(t, ns)
	want := 0
	for _, r := range append(Rules(n), PortRules(p)...) {
		want++
		if !slices.ContainsFunc(got, func(l string) bool {
			return strings.HasSuffix(l, "@"+r.Chain) && strings.Contains(l, strings.Join(r.Spec[:2], " "))
		}) {
			t.Errorf("missing %s", r.Line())
		}
	}
	if len(got) < want {
		t.Fatalf("%d rules, want at least %d:\n%s", len(got), want, strings.Join(got, "\n"))
	}

	var save string
	do(t, ns, func() (err error) { save, err = NFTablesSave(tableFilter); return err })
	for _, want := range []string{":FORWARD ACCEPT [0:0]\n", ":" + ChainForward + " - [0:0]\n", forwardJump + "\n", isolationJump + "\n"} {
		if !strings.Contains(save, want) {
			t.Errorf("NFTablesSave lacks %q:\n%s", want, save)
		}
	}

	requireReadsBack(t, ns, fw, n)

	// A rule someone else put in our chain goes at the next reconcile.
	do(t, ns, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tb := &nftables.Table{Name: NFTTable, Family: nftables.TableFamilyIPv4}
		c.AddRule(&nftables.Rule{Table: tb, Chain: &nftables.Chain{Name: nftChainName(tableFilter, ChainForward), Table: tb},
			Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
		return c.Flush()
	})
	before := len(nftLines(t, ns))
	do(t, ns, func() error { return fw.Reconcile([]Network{n}, []Ports{p}, ownsAll) })
	if after := nftLines(t, ns); len(after) != before-1 || slices.ContainsFunc(after, func(l string) bool { return strings.Contains(l, "unreadable") }) {
		t.Errorf("the stray rule stayed:\n%s", strings.Join(after, "\n"))
	}

	do(t, ns, func() error { return fw.RemovePorts(p) })
	do(t, ns, func() error { return fw.RemoveNetwork(n.ID) })
	if left := nftLines(t, ns); left != nil {
		t.Errorf("after the last network, the tables hold:\n%s", strings.Join(left, "\n"))
	}
}

// requireReadsBack checks that n's rules read back from the table as
// written: a second EnsureNetwork has nothing to do.
func requireReadsBack(t *testing.T, ns *nstest.NS, fw *Firewall, n Network) {
	t.Helper()
	for _, f := range fw.families {
		var st familyState
		do(t, ns, func() (err error) { st, err = f.read(); return err })
		var mine []Rule
		for _, r := range Rules(n) {
			if r.IPv6 == f.ipv6 {
				mine = append(mine, r)
			}
		}
		if s := plan(st, syncRequest{desired: mine, owns: func(l string) bool { return taggedWith(l, n.ID) }}); !s.empty() {
			t.Errorf("%s: second EnsureNetwork would change:\n%s", f, s)
		}
	}
}

// At 1000 published ports the whole table is one batch, and reads back.
func TestKernelNFTLargeBatch(t *testing.T) {
	ns := nstest.New(t)
	fw := newNFTFirewall(t, ns)
	n := Network{ID: "n1", Bridge: "vxb-n1", Subnets: []netip.Prefix{prefix("10.1.0.0/16")}, Masquerade: true, ICC: true}
	ports := manyPorts(n, 1000)
	do(t, ns, func() error { return fw.Reconcile([]Network{n}, ports, ownsAll) })
	if got := len(nftLines(t, ns)); got < 3000 {
		t.Fatalf("%d rules after publishing 1000 ports", got)
	}
	do(t, ns, func() error { return fw.Reconcile(nil, nil, ownsAll) })
	if left := nftLines(t, ns); left != nil {
		t.Errorf("left: %d lines", len(left))
	}
}

// manyPorts publishes count TCP ports, one endpoint each, on network n.
func manyPorts(n Network, count int) []Ports {
	var out []Ports
	base := n.Subnets[0].Addr().As4()
	for i := range count {
		c := base
		c[2], c[3] = byte(1+i/250), byte(2+i%250)
		out = append(out, Ports{NetworkID: n.ID, EndpointID: fmt.Sprintf("e%04d", i), Bridge: n.Bridge,
			Subnets: n.Subnets, Mappings: []PortMapping{{Proto: "tcp", HostIP: netip.IPv4Unspecified(), HostPort: uint16(20000 + i),
				ContainerIP: netip.AddrFrom4(c), ContainerPort: 80}}})
	}
	return out
}
