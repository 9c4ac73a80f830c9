package firewall

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// ownsAll is a Reconcile that may delete every rule not asked for.
func ownsAll(OwnedRule) bool { return true }

const (
	stateA = "aaaaaaaaaaaa"
	stateB = "bbbbbbbbbbbb"
)

// Rules of another state file (another identity, or none: made before
// identities) stay through everything this firewall does, unless a
// Reconcile is told it owns them; their chains stay while they are there.
func TestRulesOfOtherStateFilesStay(t *testing.T) {
	ns, other := newKernelFirewall(t)
	fwA := &Firewall{families: other.families}
	fwA.SetOwner(stateA)
	other.SetOwner(stateB)
	legacy := &Firewall{families: other.families} // no owner: the comments of before
	nb := Network{ID: "netb", Bridge: "vxb-b", Subnets: []netip.Prefix{prefix("10.20.2.0/24")}, Masquerade: true, ICC: true}
	nl := Network{ID: "netl", Bridge: "vxb-l", Subnets: []netip.Prefix{prefix("10.20.3.0/24")}, ICC: false, Internal: true}
	pb := Ports{NetworkID: "netb", EndpointID: "epb", Bridge: "vxb-b", Subnets: nb.Subnets, Mappings: []PortMapping{
		{Proto: "tcp", HostIP: netip.IPv4Unspecified(), HostPort: 8080, ContainerIP: netip.MustParseAddr("10.20.2.2"), ContainerPort: 80}}}
	do(t, ns, func() error { return other.EnsureNetwork(nb) })
	do(t, ns, func() error { return other.EnsurePorts(pb) })
	do(t, ns, func() error { return legacy.EnsureNetwork(nl) })
	before := dump(t, ns)

	na := Network{ID: "neta", Bridge: "vxb-a", Subnets: []netip.Prefix{prefix("10.20.1.0/24")}, Masquerade: true, ICC: true}
	mine := func(r OwnedRule) bool { return r.Owner == stateA }
	do(t, ns, func() error { return fwA.EnsureNetwork(na) })
	do(t, ns, func() error { return fwA.Reconcile(nil, nil, mine) })
	do(t, ns, func() error { return fwA.RemoveNetwork("netb") })
	do(t, ns, func() error { return fwA.RemovePorts(pb) })
	do(t, ns, func() error { return fwA.Reconcile([]Network{na}, nil, mine) })
	do(t, ns, func() error { return fwA.RemoveNetwork("neta") })
	if after := dump(t, ns); after != before {
		t.Fatalf("another state file's rules changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	rules, err := ownedRulesIn(t, ns, fwA)
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]int{}
	for _, r := range rules {
		owners[r.Owner]++
	}
	if owners[stateB] == 0 || owners[""] == 0 || owners[stateA] != 0 || len(owners) != 2 {
		t.Errorf("rules by owner: %v; want state B's and some without identity only", owners)
	}
	if p, ok := ReadPolicy(rules, "netb"); !ok || p != (Policy{Masquerade: true, ICC: true}) {
		t.Errorf("netb's policy read back: %+v %v", p, ok)
	}
	if p, ok := ReadPolicy(rules, "netl"); !ok || p != (Policy{Internal: true}) {
		t.Errorf("netl's policy read back: %+v %v", p, ok)
	}
	if got := ReadPorts(rules, "epb"); !slices.Equal(got, pb.Mappings) {
		t.Errorf("epb's ports read back: %+v", got)
	}

	// Owning state B (a purge, an adoption) removes its rules; the legacy
	// ones stay, and so do the chains they are in.
	do(t, ns, func() error { return fwA.Reconcile(nil, nil, func(r OwnedRule) bool { return r.Owner == stateB }) })
	left := dump(t, ns)
	if strings.Contains(left, stateB) || !strings.Contains(left, `"vxbridge:netl"`) {
		t.Errorf("after a reconcile owning B:\n%s", left)
	}
	do(t, ns, func() error { return fwA.Reconcile(nil, nil, ownsAll) })
	if strings.Contains(dump(t, ns), "VXBRIDGE") {
		t.Errorf("owning all left chains:\n%s", dump(t, ns))
	}
}

func ownedRulesIn(t *testing.T, ns interface{ Do(func() error) error }, fw *Firewall) (rules []OwnedRule, err error) {
	t.Helper()
	err = ns.Do(func() (err error) {
		rules, err = fw.OwnedRules()
		return err
	})
	return rules, err
}

func TestRulesCarryTheOwner(t *testing.T) {
	n := Network{Owner: stateA, ID: "n1", Bridge: "vxb-n1", Subnets: []netip.Prefix{prefix("10.1.0.0/24")}, Masquerade: true, ICC: true}
	for _, r := range Rules(n) {
		owner, id, ok := lineOwner(r.Line())
		if !ok || owner != stateA || id != "n1" {
			t.Errorf("%s: owner %q id %q", r.Line(), owner, id)
		}
	}
	p := Ports{Owner: stateA, NetworkID: "n1", EndpointID: "e1", Bridge: "vxb-n1", Mappings: []PortMapping{
		{Proto: "udp", HostIP: netip.IPv4Unspecified(), HostPort: 53, ContainerIP: netip.MustParseAddr("10.1.0.2"), ContainerPort: 53}}}
	for _, r := range PortRules(p) {
		n, e, ok := linePorts(r.Line())
		owner, _, _ := lineOwner(r.Line())
		if !ok || n != "n1" || e != "e1" || owner != stateA {
			t.Errorf("%s: network %q endpoint %q owner %q", r.Line(), n, e, owner)
		}
	}
}
