package firewall

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func testNetwork(id, bridge string, subnets ...string) Network {
	n := Network{ID: id, Bridge: bridge, Masquerade: true, ICC: true}
	for _, s := range subnets {
		n.Subnets = append(n.Subnets, netip.MustParsePrefix(s))
	}
	return n
}

func lines(rules []Rule, ipv6 bool) []string {
	var out []string
	for _, r := range rules {
		if r.IPv6 == ipv6 {
			out = append(out, r.Table+" "+r.Line())
		}
	}
	return out
}

func TestRulesIPv4(t *testing.T) {
	got := lines(Rules(testNetwork("n1", "vxb-n1", "10.1.0.0/24")), false)
	const c = `-m comment --comment "vxbridge:n1"`
	want := []string{
		`filter -A VXBRIDGE-ISOLATION ! -i vxb-n1 -o vxb-n1 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT ` + c + ` -j DROP`,
		`filter -A VXBRIDGE-ISOLATION -i vxb-n1 -o docker0 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT ` + c + ` -j DROP`,
		`filter -A VXBRIDGE-ISOLATION -i vxb-n1 -o docker_gwbridge -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT ` + c + ` -j DROP`,
		`filter -A VXBRIDGE-ISOLATION -i vxb-n1 -o br-+ -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT ` + c + ` -j DROP`,
		`mangle -A VXBRIDGE-DOCKER -i docker0 -o vxb-n1 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT ` + c + ` -j DROP`,
		`mangle -A VXBRIDGE-DOCKER -i docker_gwbridge -o vxb-n1 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT ` + c + ` -j DROP`,
		`mangle -A VXBRIDGE-DOCKER -i br-+ -o vxb-n1 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT ` + c + ` -j DROP`,
		`filter -A VXBRIDGE-FORWARD -i vxb-n1 -o vxb-n1 ` + c + ` -j ACCEPT`,
		`filter -A VXBRIDGE-FORWARD -i vxb-n1 ! -o vxb-n1 ` + c + ` -j ACCEPT`,
		`filter -A VXBRIDGE-FORWARD -o vxb-n1 -m conntrack --ctstate RELATED,ESTABLISHED ` + c + ` -j ACCEPT`,
		`nat -A VXBRIDGE-POSTROUTING -s 10.1.0.0/24 ! -o vxb-n1 ` + c + ` -j MASQUERADE`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if v6 := lines(Rules(testNetwork("n1", "vxb-n1", "10.1.0.0/24")), true); len(v6) != 0 {
		t.Errorf("v4-only network has v6 rules: %q", v6)
	}
}

func TestRulesDualStackSameShapeBothFamilies(t *testing.T) {
	n := testNetwork("n1", "vxb-n1", "10.1.0.0/24", "fd00:1::/64", "10.2.0.7/16")
	rules := Rules(n)
	v4, v6 := lines(rules, false), lines(rules, true)
	// Subnets are masked; each family masquerades its own.
	if !slices.Contains(v4, `nat -A VXBRIDGE-POSTROUTING -s 10.2.0.0/16 ! -o vxb-n1 -m comment --comment "vxbridge:n1" -j MASQUERADE`) {
		t.Errorf("v4 rules lack the masked second subnet: %q", v4)
	}
	if !slices.Contains(v6, `nat -A VXBRIDGE-POSTROUTING -s fd00:1::/64 ! -o vxb-n1 -m comment --comment "vxbridge:n1" -j MASQUERADE`) {
		t.Errorf("v6 rules lack the v6 masquerade: %q", v6)
	}
	// Interface rules are the same in both families.
	strip := func(ls []string) []string {
		var out []string
		for _, l := range ls {
			if !strings.Contains(l, "MASQUERADE") {
				out = append(out, l)
			}
		}
		return out
	}
	if !slices.Equal(strip(v4), strip(v6)) {
		t.Errorf("filter rules differ between families:\nv4 %q\nv6 %q", strip(v4), strip(v6))
	}
	if len(v4) != 12 || len(v6) != 11 {
		t.Errorf("got %d v4 and %d v6 rules, want 12 and 11", len(v4), len(v6))
	}
}

func TestRulesInternal(t *testing.T) {
	n := testNetwork("n1", "vxb-n1", "10.1.0.0/24")
	n.Internal = true
	got := lines(Rules(n), false)
	const c = `-m comment --comment "vxbridge:n1"`
	want := []string{
		`filter -A VXBRIDGE-ISOLATION -i vxb-n1 ! -o vxb-n1 ` + c + ` -j DROP`,
		`filter -A VXBRIDGE-ISOLATION ! -i vxb-n1 -o vxb-n1 ` + c + ` -j DROP`,
		`mangle -A VXBRIDGE-DOCKER -i docker0 -o vxb-n1 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT ` + c + ` -j DROP`,
		`mangle -A VXBRIDGE-DOCKER -i docker_gwbridge -o vxb-n1 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT ` + c + ` -j DROP`,
		`mangle -A VXBRIDGE-DOCKER -i br-+ -o vxb-n1 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT ` + c + ` -j DROP`,
		`filter -A VXBRIDGE-FORWARD -i vxb-n1 -o vxb-n1 ` + c + ` -j ACCEPT`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRulesMasqueradeOffAndICCOff(t *testing.T) {
	n := testNetwork("n1", "vxb-n1", "10.1.0.0/24")
	n.Masquerade, n.ICC = false, false
	got := lines(Rules(n), false)
	for _, l := range got {
		if strings.HasPrefix(l, "nat ") {
			t.Errorf("masquerade off, yet %q", l)
		}
	}
	hairpin := `filter -A VXBRIDGE-ISOLATION -i vxb-n1 -o vxb-n1 -m physdev ! --physdev-is-bridged -m comment --comment "vxbridge:n1" -j DROP`
	if !slices.Contains(got, hairpin) {
		t.Errorf("icc off lacks the routed-hairpin drop: %q", got)
	}
	n.ICC = true
	if slices.Contains(lines(Rules(n), false), hairpin) {
		t.Errorf("icc on has the hairpin drop")
	}
}

func TestRulesNoSubnetsNoRules(t *testing.T) {
	if r := Rules(testNetwork("n1", "vxb-n1")); len(r) != 0 {
		t.Errorf("network without subnets has rules: %v", r)
	}
}

// Every rule is tagged, none is repeated, and each chain holds one verdict
// (which is what makes rule order irrelevant).
func TestRulesInvariants(t *testing.T) {
	verdicts := map[string]string{ChainIsolation: "DROP", ChainDockerGuard: "DROP", ChainForward: "ACCEPT", ChainPostrouting: "MASQUERADE"}
	for _, n := range variants(testNetwork("abc123", "vxb-abc", "10.1.0.0/24", "fd00::/64")) {
		seen := map[string]bool{}
		for _, r := range Rules(n) {
			key := r.Table + " " + r.Line()
			if seen[fmtBool(r.IPv6)+key] {
				t.Errorf("%+v: duplicate rule %q", n, key)
			}
			seen[fmtBool(r.IPv6)+key] = true
			if id, ok := lineNetwork(r.Line()); !ok || id != n.ID {
				t.Errorf("%+v: rule %q tagged %q, want %q", n, key, id, n.ID)
			}
			if v := r.Spec[len(r.Spec)-1]; v != verdicts[r.Chain] {
				t.Errorf("%+v: rule %q in %s has verdict %s", n, key, r.Chain, v)
			}
			wantTable := map[string]string{ChainPostrouting: tableNat, ChainDockerGuard: tableMangle}[r.Chain]
			if wantTable == "" {
				wantTable = tableFilter
			}
			if r.Table != wantTable {
				t.Errorf("rule %q in table %s", key, r.Table)
			}
		}
	}
}

func variants(base Network) []Network {
	var out []Network
	for i := range 8 {
		n := base
		n.Internal, n.Masquerade, n.ICC = i&1 != 0, i&2 != 0, i&4 != 0
		out = append(out, n)
	}
	return out
}

func fmtBool(b bool) string {
	if b {
		return "6 "
	}
	return "4 "
}

func TestValidate(t *testing.T) {
	ok := testNetwork("0123abc", "vxb-0123abc", "10.1.0.0/24")
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid network refused: %v", err)
	}
	for name, mut := range map[string]func(*Network){
		"empty id":        func(n *Network) { n.ID = "" },
		"quote in id":     func(n *Network) { n.ID = `a"b` },
		"space in id":     func(n *Network) { n.ID = "a b" },
		"long id":         func(n *Network) { n.ID = strings.Repeat("a", 129) },
		"empty bridge":    func(n *Network) { n.Bridge = "" },
		"long bridge":     func(n *Network) { n.Bridge = "vxb-0123456789ab" },
		"wildcard bridge": func(n *Network) { n.Bridge = "vxb+" },
		"negated bridge":  func(n *Network) { n.Bridge = "!vxb" },
		"docker0":         func(n *Network) { n.Bridge = "docker0" },
		"docker br-":      func(n *Network) { n.Bridge = "br-lan" },
		"gwbridge":        func(n *Network) { n.Bridge = "docker_gwbridge" },
		"bad subnet":      func(n *Network) { n.Subnets = append(n.Subnets, netip.Prefix{}) },
	} {
		n := ok
		n.Subnets = slices.Clone(ok.Subnets)
		mut(&n)
		if err := n.Validate(); !errors.Is(err, ErrInvalidNetwork) {
			t.Errorf("%s: Validate = %v, want ErrInvalidNetwork", name, err)
		}
	}
}

func TestLineNetwork(t *testing.T) {
	for line, want := range map[string]string{
		`-A VXBRIDGE-FORWARD -i b -o b -m comment --comment "vxbridge:abc" -j ACCEPT`: "abc",
		`-A VXBRIDGE-FORWARD -j VXBRIDGE-ISOLATION`:                                   "",
		`-A FORWARD -m comment --comment "other:abc" -j ACCEPT`:                       "",
	} {
		got, ok := lineNetwork(line)
		if got != want || ok != (want != "") {
			t.Errorf("lineNetwork(%q) = %q, %v; want %q", line, got, ok, want)
		}
	}
}
