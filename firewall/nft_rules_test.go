package firewall

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables/userdata"
)

// modelRules is every kind of rule the model makes: networks of each
// policy in both families, published ports of each protocol on every and on
// one host address, a cross-host network answering names with host
// addresses, the jumps and the VXLAN port rule.
func modelRules() []Rule {
	var rules []Rule
	for _, n := range []Network{
		{ID: "n1", Bridge: "vxb-n1", Subnets: []netip.Prefix{prefix("10.1.0.0/24"), prefix("fd00:1::/64")}, Masquerade: true, ICC: true},
		{ID: "n2", Bridge: "vxb-n2", Subnets: []netip.Prefix{prefix("10.2.0.0/16"), prefix("fd00:2::/48")}, ICC: false},
		{ID: "n3", Bridge: "vxb-n3", Subnets: []netip.Prefix{prefix("10.3.0.0/24"), prefix("fd00:3::/64")}, Internal: true, ICC: false},
		{ID: "n4", Owner: "aaaaaaaaaaaa", Bridge: "vxb-n4", Subnets: []netip.Prefix{prefix("10.4.0.0/24"), prefix("fd00:4::/64")},
			Gateways: []netip.Addr{addr("10.4.0.1"), addr("fd00:4::1")}, HostAddrs: []netip.Addr{addr("10.4.0.250"), addr("fd00:4::fa")},
			NamesPort: 5335, Masquerade: true, ICC: true},
	} {
		rules = append(rules, Rules(n)...)
	}
	p := testPorts("e1")
	for _, proto := range portProtos {
		p.Mappings = append(p.Mappings,
			PortMapping{Proto: proto, HostIP: addr("192.0.2.2"), HostPort: 5353, ContainerIP: addr("10.1.0.2"), ContainerPort: 53},
			PortMapping{Proto: proto, HostIP: addr("2001:db8::2"), HostPort: 65535, ContainerIP: addr("fd00:1::2"), ContainerPort: 1})
	}
	rules = append(rules, PortRules(p)...)
	for _, j := range []struct{ table, line string }{
		{tableFilter, forwardJump}, {tableFilter, isolationJump}, {tableNat, postroutingJump}, {tableNat, preroutingDNATJump},
		{tableNat, outputDNATJump}, {tableNat, preroutingNamesJump}, {tableMangle, guardJump}, {tableFilter, inputJump},
	} {
		w := splitLine(j.line)
		for _, ipv6 := range []bool{false, true} {
			rules = append(rules, Rule{IPv6: ipv6, Table: j.table, Chain: w[1], Spec: w[2:]})
		}
	}
	for _, ipv6 := range []bool{false, true} {
		for _, line := range guardRules(4789, ipv6) {
			w := splitLine(line)
			rules = append(rules, Rule{IPv6: ipv6, Table: tableFilter, Chain: w[1], Spec: w[2:]})
		}
	}
	return rules
}

// Every rule renders into nftables expressions and reads back as the same
// line: the nftables backend diffs the text plan.go diffs.
func TestNFTRendersEveryRule(t *testing.T) {
	for _, r := range modelRules() {
		exprs, comment, err := renderRule(r.IPv6, r.Table, r.Spec)
		if err != nil {
			t.Errorf("%s: %v", r.Line(), err)
			continue
		}
		spec, ok := decodeRule(r.IPv6, exprs, commentData(comment))
		if got := ruleLine(r.Chain, spec); !ok || got != r.Line() {
			t.Errorf("round trip:\n got %s (%v)\nwant %s", got, ok, r.Line())
		}
	}
}

func TestNFTRefusesWhatItCannotExpress(t *testing.T) {
	for _, spec := range []string{
		"-m set --match-set x src -j ACCEPT",              // not vxbridge's set
		"-m set --match-set vxbridge-vtep4 dst -j ACCEPT", // only src
		"-p udp -j REDIRECT --to-ports 1-2",
		"-p gre -j ACCEPT",
		"-m conntrack --ctstate ESTABLISHED,DNAT -j ACCEPT", // any of both keys
		"-d 10.0.0.0/8 -j LOG",
		"-j DNAT --to-destination fd00::1",
		"-i eth0",
	} {
		w := splitLine(spec)
		if strings.HasSuffix(spec, "-i eth0") {
			w = append(w, "-j")
		}
		if _, _, err := renderRule(false, tableFilter, w); err == nil {
			t.Errorf("%q rendered", spec)
		}
	}
}

func TestSplitLineReadsQuoting(t *testing.T) {
	got := splitLine(`-A X -m comment --comment "a \"b\" \\c" -j ACCEPT`)
	want := []string{"-A", "X", "-m", "comment", "--comment", `a "b" \c`, "-j", "ACCEPT"}
	if !slices.Equal(got, want) {
		t.Errorf("%q", got)
	}
	if quoted := ruleLine("X", []string{"-m", "comment", "--comment", `a "b" \c`, "-j", "ACCEPT"}); !slices.Equal(splitLine(quoted), want) {
		t.Errorf("quote and split disagree: %s", quoted)
	}
}

// A rule the backend did not write is no rule of the model: it gets a line
// no desired rule has, so the plan deletes it.
func TestNFTDecodeRefusesForeignRules(t *testing.T) {
	exprs, _, err := renderRule(false, tableFilter, splitLine("-i vxb-a -j ACCEPT"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := decodeRule(false, exprs[:2], nil); ok {
		t.Error("a rule without a verdict decoded")
	}
	if _, ok := decodeRule(false, append(slices.Clone(exprs), exprs[0]), nil); ok {
		t.Error("a rule with a match after its verdict decoded")
	}
	if spec, ok := decodeRule(false, exprs, userdata.AppendString(nil, userdata.TypeComment, "hi")); !ok || !slices.Contains(spec, "hi") {
		t.Errorf("comment lost: %q", spec)
	}
}

// A declared chain whose kept rules are in place is not flushed: the batch
// deletes what goes and appends what comes, and ends where iptables-restore
// would.
func TestNFTBatchIsTheSizeOfTheChange(t *testing.T) {
	line := func(spec string) string { return "-A " + ChainForward + " " + spec }
	a, b, c := line("-i a -j ACCEPT"), line("-i b -j ACCEPT"), line("-i c -j ACCEPT")
	chain := nftChainName(tableFilter, ChainForward)
	listing := func(lines ...string) *nftListing {
		l := &nftListing{exists: true, chains: map[string]*nftChainListing{chain: {}}}
		for i, s := range lines {
			l.chains[chain].rules = append(l.chains[chain].rules, nftListedRule{line: s, handle: uint64(i + 1)})
		}
		return l
	}
	kinds := func(ops []nftOp) (out []nftOpKind) {
		for _, o := range ops {
			out = append(out, o.kind)
		}
		return out
	}
	script := &restoreScript{filter: []string{":" + ChainForward + " - [0:0]", a, c}}
	ops, err := nftBatch(false, listing(a, b), script)
	if err != nil || !slices.Equal(kinds(ops), []nftOpKind{nftDelRule, nftAddRule}) || ops[0].handle != 2 {
		t.Errorf("a, b -> a, c: %v %+v", err, ops)
	}
	// b before a: the order would change, so the chain is refilled.
	ops, err = nftBatch(false, listing(b, a), &restoreScript{filter: []string{":" + ChainForward + " - [0:0]", a, b}})
	if err != nil || !slices.Equal(kinds(ops), []nftOpKind{nftFlushChain, nftAddRule, nftAddRule}) {
		t.Errorf("b, a -> a, b: %v %+v", err, kinds(ops))
	}
}

// A table that holds the VTEP set outlives its last rule: deleting it
// would take the set with it, which the VXLAN port rule, written again at
// the next sync, names (the set goes only with that rule, dropSet).
func TestNFTBatchKeepsATableWithASet(t *testing.T) {
	chain := nftChainName(tableNat, ChainPostrouting)
	line := "-A " + ChainPostrouting + " -s 10.1.0.0/24 -j MASQUERADE"
	l := &nftListing{exists: true, sets: map[string]string{VTEPSet4: "ipv4_addr"},
		chains: map[string]*nftChainListing{chain: {rules: []nftListedRule{{line: line, handle: 7}}}}}
	ops, err := nftBatch(false, l, &restoreScript{nat: []string{":" + ChainPostrouting + " - [0:0]", "-X " + ChainPostrouting}})
	if err != nil || slices.ContainsFunc(ops, func(o nftOp) bool { return o.kind == nftDelTable }) || len(ops) == 0 {
		t.Errorf("last rule of a table with a set removed: %v %+v", err, ops)
	}
	l.sets = nil
	if ops, err := nftBatch(false, l, &restoreScript{nat: []string{":" + ChainPostrouting + " - [0:0]", "-X " + ChainPostrouting}}); err != nil ||
		len(ops) != 1 || ops[0].kind != nftDelTable {
		t.Errorf("last rule of a table without a set removed: %v %+v", err, ops)
	}
}

// FuzzNFTRender feeds arbitrary specs through the nftables renderer: no
// panic, and whatever renders reads back as a spec that renders to the same
// expressions (the decoder may print words in iptables' order, never
// another rule).
func FuzzNFTRender(f *testing.F) {
	for _, r := range modelRules() {
		f.Add(strings.Join(r.Spec, " "), r.IPv6)
	}
	f.Add("-m conntrack ! --ctstate DNAT,ESTABLISHED -i br-+ -j DROP", false)
	f.Add("-p udp -m udp --sport 1 --dport 2 -j SNAT --to-source fd00::1", true)
	f.Fuzz(func(t *testing.T, spec string, ipv6 bool) {
		exprs, comment, err := renderRule(ipv6, tableNat, splitLine(spec))
		if err != nil {
			return
		}
		back, ok := decodeRule(ipv6, exprs, commentData(comment))
		if !ok {
			t.Fatalf("%q rendered but does not read back", spec)
		}
		again, comment2, err := renderRule(ipv6, tableNat, back)
		if err != nil || comment2 != comment || !reflect.DeepEqual(again, exprs) {
			t.Fatalf("%q read back as %q, which renders otherwise (%v)", spec, back, err)
		}
	})
}
