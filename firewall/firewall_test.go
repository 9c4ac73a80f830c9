package firewall

import (
	"errors"
	"fmt"
	"github.com/vxbridge/vxbridge/internal/testutil/iptest"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

// Kernel tier: every test works in a fresh network namespace, so only that
// namespace's tables are touched.

func newKernelFirewall(t *testing.T) (*nstest.NS, *Firewall) {
	t.Helper()
	ns := nstest.New(t)
	var fw *Firewall
	do(t, ns, func() (err error) {
		fw, err = New()
		return err
	})
	return ns, fw
}

func do(t *testing.T, ns *nstest.NS, fn func() error) {
	t.Helper()
	if err := ns.Do(fn); err != nil {
		t.Fatal(err)
	}
}

// run runs a command inside ns and returns its output.
func run(t *testing.T, ns *nstest.NS, name string, args ...string) string {
	t.Helper()
	var out []byte
	do(t, ns, func() (err error) {
		out, err = exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
		}
		return nil
	})
	return string(out)
}

var counters = regexp.MustCompile(` \[\d+:\d+\]$`)

// dump is iptables-save and ip6tables-save of ns without the comment lines
// (they carry a date) and the counters.
func dump(t *testing.T, ns *nstest.NS) string {
	t.Helper()
	var out []string
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		for _, l := range strings.Split(run(t, ns, save), "\n") {
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			out = append(out, counters.ReplaceAllString(l, ""))
		}
	}
	return strings.Join(out, "\n")
}

// seedDocker loads docker 20.10's rules for docker0 into both families.
func seedDocker(t *testing.T, ns *nstest.NS) {
	t.Helper()
	for _, bin := range []string{"iptables", "ip6tables"} {
		for table, listing := range map[string]string{tableFilter: dockerFilter, tableNat: dockerNat} {
			for _, l := range strings.Split(strings.TrimSpace(listing), "\n") {
				if bin == "ip6tables" {
					l = strings.NewReplacer("172.17.0.0/16", "fd17::/64", "127.0.0.0/8", "::1/128").Replace(l)
				}
				run(t, ns, bin, append([]string{"-w", "-t", table}, strings.Fields(l)...)...)
			}
		}
	}
}

func listing(t *testing.T, ns *nstest.NS, bin, table string) []string {
	return strings.Split(strings.TrimSpace(run(t, ns, bin, "-w", "-t", table, "-S")), "\n")
}

// rulesOf lists one chain's rules.
func rulesOf(t *testing.T, ns *nstest.NS, bin, table, chain string) []string {
	var out []string
	for _, l := range strings.Split(run(t, ns, bin, "-w", "-t", table, "-S", chain), "\n") {
		if strings.HasPrefix(l, "-A ") {
			out = append(out, l)
		}
	}
	return out
}

func binOf(ipv6 bool) string {
	if ipv6 {
		return "ip6tables"
	}
	return "iptables"
}

// requireRules checks that each rule is listed exactly once, in the very text
// Rule.Line gives: the diff relies on that text.
func requireRules(t *testing.T, ns *nstest.NS, rules []Rule) {
	t.Helper()
	for _, r := range rules {
		if n := countOf(listing(t, ns, binOf(r.IPv6), r.Table), r.Line()); n != 1 {
			t.Errorf("%s -t %s -S lists %q %d times, want once", binOf(r.IPv6), r.Table, r.Line(), n)
		}
	}
}

func requireNoRulesOf(t *testing.T, ns *nstest.NS, id string) {
	t.Helper()
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{tableFilter, tableNat, tableMangle} {
			for _, l := range listing(t, ns, bin, table) {
				if taggedWith(l, id) {
					t.Errorf("%s -t %s: rule of network %s left: %q", bin, table, id, l)
				}
			}
		}
	}
}

func TestKernelEnsureNetworkInstallsRules(t *testing.T) {
	ns, fw := newKernelFirewall(t)
	dual := testNetwork("dual", "vxb-dual", "10.1.0.0/24", "fd00:1::/64")
	internal := testNetwork("internal", "vxb-int", "10.2.0.0/24", "fd00:2::/64")
	internal.Internal = true
	noICC := testNetwork("noicc", "vxb-noicc", "10.3.0.0/24")
	noICC.ICC = false
	var all []Rule
	for _, n := range []Network{dual, internal, noICC} {
		do(t, ns, func() error { return fw.EnsureNetwork(n) })
		all = append(all, Rules(n)...)
	}
	requireRules(t, ns, all)
	for _, bin := range []string{"iptables", "ip6tables"} {
		filter, nat := listing(t, ns, bin, tableFilter), listing(t, ns, bin, tableNat)
		if l := rulesOf(t, ns, bin, tableFilter, ChainForward); l[0] != isolationJump {
			t.Errorf("%s: isolation jump is not the first rule of %s:\n%s", bin, ChainForward, strings.Join(l, "\n"))
		}
		if !slices.Contains(filter, forwardJump) || !slices.Contains(nat, postroutingJump) {
			t.Errorf("%s: jumps missing:\n%s\n%s", bin, strings.Join(filter, "\n"), strings.Join(nat, "\n"))
		}
	}
}

func TestKernelEnsureNetworkTwiceChangesNothing(t *testing.T) {
	ns, fw := newKernelFirewall(t)
	n := testNetwork("n1", "vxb-n1", "10.1.0.0/24", "fd00:1::/64")
	do(t, ns, func() error { return fw.EnsureNetwork(n) })
	first := dump(t, ns)
	do(t, ns, func() error { return fw.EnsureNetwork(n) })
	if second := dump(t, ns); second != first {
		t.Errorf("second EnsureNetwork changed the tables:\n%s\nthen:\n%s", first, second)
	}
	requireRules(t, ns, Rules(n))
}

func TestKernelRemoveLastNetworkRestoresDump(t *testing.T) {
	ns, fw := newKernelFirewall(t)
	seedDocker(t, ns)
	before := dump(t, ns)
	a := testNetwork("aaa", "vxb-a", "10.1.0.0/24", "fd00:1::/64")
	b := testNetwork("bbb", "vxb-b", "10.2.0.0/24")
	do(t, ns, func() error { return fw.EnsureNetwork(a) })
	do(t, ns, func() error { return fw.EnsureNetwork(b) })

	do(t, ns, func() error { return fw.RemoveNetwork(a.ID) })
	requireNoRulesOf(t, ns, a.ID)
	requireRules(t, ns, Rules(b))
	// b is v4 only: the v6 chains and jumps went with a.
	for _, table := range []string{tableFilter, tableNat, tableMangle} {
		for _, l := range listing(t, ns, "ip6tables", table) {
			if strings.Contains(l, "VXBRIDGE") {
				t.Errorf("ip6tables -t %s: %q left after the last v6 network went", table, l)
			}
		}
	}
	do(t, ns, func() error { return fw.RemoveNetwork(b.ID) })
	// iptables-nft leaves the mangle table it made for the docker guard,
	// empty: it filters nothing.
	if after := iptest.WithoutEmptyTables(dump(t, ns)); after != iptest.WithoutEmptyTables(before) {
		t.Errorf("tables after removing every network:\n%s\nbefore:\n%s", after, before)
	}
}

func TestKernelRemoveLastNetworkFreshNamespace(t *testing.T) {
	ns, fw := newKernelFirewall(t)
	before := iptest.WithoutEmptyTables(dump(t, ns))
	n := testNetwork("n1", "vxb-n1", "10.1.0.0/24", "fd00:1::/64")
	do(t, ns, func() error { return fw.EnsureNetwork(n) })
	do(t, ns, func() error { return fw.RemoveNetwork(n.ID) })
	if after := iptest.WithoutEmptyTables(dump(t, ns)); after != before {
		t.Errorf("tables after removing the network:\n%s\nbefore:\n%s", after, before)
	}
}

func TestKernelRemoveUnknownNetwork(t *testing.T) {
	ns, fw := newKernelFirewall(t)
	do(t, ns, func() error { return fw.RemoveNetwork("unknown") })
	n := testNetwork("n1", "vxb-n1", "10.1.0.0/24")
	do(t, ns, func() error { return fw.EnsureNetwork(n) })
	before := dump(t, ns)
	do(t, ns, func() error { return fw.RemoveNetwork("unknown") })
	if after := dump(t, ns); after != before {
		t.Errorf("removing an unknown network changed the tables:\n%s\nbefore:\n%s", after, before)
	}
}

func TestKernelReconcile(t *testing.T) {
	ns, fw := newKernelFirewall(t)
	seedDocker(t, ns)
	before := dump(t, ns)
	a := testNetwork("aaa", "vxb-a", "10.1.0.0/24", "fd00:1::/64")
	stale := testNetwork("stale", "vxb-s", "10.2.0.0/24", "fd00:2::/64")
	do(t, ns, func() error { return fw.EnsureNetwork(a) })
	do(t, ns, func() error { return fw.EnsureNetwork(stale) })
	run(t, ns, "iptables", "-w", "-A", ChainIsolation, "-i", "junk", "-j", "DROP")

	do(t, ns, func() error { return fw.Reconcile([]Network{a}, nil, ownsAll) })
	requireNoRulesOf(t, ns, stale.ID)
	requireRules(t, ns, Rules(a))
	if slices.Contains(listing(t, ns, "iptables", tableFilter), "-A "+ChainIsolation+" -i junk -j DROP") {
		t.Errorf("Reconcile kept an untagged rule in %s", ChainIsolation)
	}
	want := dump(t, ns)

	run(t, ns, "iptables", "-w", "-F", ChainForward)
	run(t, ns, "ip6tables", "-w", "-t", "nat", "-F", ChainPostrouting)
	do(t, ns, func() error { return fw.Reconcile([]Network{a}, nil, ownsAll) })
	if got := dump(t, ns); got != want {
		t.Errorf("after flushing and reconciling:\n%s\nwant:\n%s", got, want)
	}

	do(t, ns, func() error { return fw.Reconcile(nil, nil, ownsAll) })
	if after := iptest.WithoutEmptyTables(dump(t, ns)); after != iptest.WithoutEmptyTables(before) {
		t.Errorf("Reconcile(nil) left:\n%s\nbefore:\n%s", after, before)
	}
}

func TestKernelJumpAfterDockerUserAndMovedBack(t *testing.T) {
	ns, fw := newKernelFirewall(t)
	seedDocker(t, ns)
	n := testNetwork("n1", "vxb-n1", "10.1.0.0/24", "fd00:1::/64")
	do(t, ns, func() error { return fw.EnsureNetwork(n) })
	forwardAt := func(bin string) int { return slices.Index(listing(t, ns, bin, tableFilter), forwardJump) }
	for _, bin := range []string{"iptables", "ip6tables"} {
		l := listing(t, ns, bin, tableFilter)
		if i := forwardAt(bin); i < 1 || l[i-1] != dockerUserJump {
			t.Errorf("%s: our jump does not follow DOCKER-USER:\n%s", bin, strings.Join(l, "\n"))
		}
	}
	// What docker does when it creates a network: its bridge's rules at the
	// top, then its isolation and DOCKER-USER jumps re-inserted above them.
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, args := range [][]string{
			{"-I", "FORWARD", "-i", "br-new", "-o", "br-new", "-j", "ACCEPT"},
			{"-I", "FORWARD", "-i", "br-new", "!", "-o", "br-new", "-j", "ACCEPT"},
			{"-D", "FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1"},
			{"-I", "FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1"},
			{"-D", "FORWARD", "-j", "DOCKER-USER"},
			{"-I", "FORWARD", "-j", "DOCKER-USER"},
		} {
			run(t, ns, bin, append([]string{"-w"}, args...)...)
		}
	}
	do(t, ns, fw.EnsureJumps)
	for _, bin := range []string{"iptables", "ip6tables"} {
		l := listing(t, ns, bin, tableFilter)
		i := forwardAt(bin)
		if i < 1 || l[i-1] != dockerUserJump || countOf(l, forwardJump) != 1 {
			t.Errorf("%s: jump not moved back after DOCKER-USER:\n%s", bin, strings.Join(l, "\n"))
		}
	}
	before := dump(t, ns)
	do(t, ns, fw.EnsureJumps)
	do(t, ns, func() error { return fw.Reconcile([]Network{n}, nil, ownsAll) })
	if after := dump(t, ns); after != before {
		t.Errorf("EnsureJumps/Reconcile with nothing to do changed the tables:\n%s\nbefore:\n%s", after, before)
	}
}

func TestKernelJumpFirstWithoutDocker(t *testing.T) {
	ns, fw := newKernelFirewall(t)
	n := testNetwork("n1", "vxb-n1", "10.1.0.0/24")
	do(t, ns, func() error { return fw.EnsureNetwork(n) })
	run(t, ns, "iptables", "-w", "-I", "FORWARD", "-i", "eth9", "-j", "ACCEPT")
	do(t, ns, func() error { return fw.Reconcile([]Network{n}, nil, ownsAll) })
	if l := rulesOf(t, ns, "iptables", tableFilter, "FORWARD"); l[0] != forwardJump {
		t.Errorf("jump not first in FORWARD:\n%s", strings.Join(l, "\n"))
	}
}

func TestKernelIPv6Unavailable(t *testing.T) {
	ns, fw := newKernelFirewall(t)
	fw.families[1].err = fmt.Errorf("%w: test", ErrIPv6Unavailable)
	v4 := testNetwork("v4", "vxb-v4", "10.1.0.0/24")
	dual := testNetwork("dual", "vxb-dual", "10.2.0.0/24", "fd00:2::/64")
	do(t, ns, func() error { return fw.EnsureNetwork(v4) })
	err := ns.Do(func() error { return fw.EnsureNetwork(dual) })
	if !errors.Is(err, ErrIPv6Unavailable) || !strings.Contains(err.Error(), "dual") {
		t.Errorf("EnsureNetwork(dual) = %v, want ErrIPv6Unavailable naming the network", err)
	}
	do(t, ns, func() error { return fw.Reconcile([]Network{v4}, nil, ownsAll) })
	do(t, ns, func() error { return fw.RemoveNetwork(v4.ID) })
}

func TestKernelErrorNamesTheRefusedLine(t *testing.T) {
	ns, fw := newKernelFirewall(t)
	n := testNetwork("n1", "vxb-n1", "10.1.0.0/24")
	do(t, ns, func() error { return fw.EnsureNetwork(n) })
	// Someone else jumps to our chain: it cannot be deleted.
	run(t, ns, "iptables", "-w", "-A", "INPUT", "-j", ChainIsolation)
	err := ns.Do(func() error { return fw.RemoveNetwork(n.ID) })
	if err == nil || !strings.Contains(err.Error(), ChainIsolation) {
		t.Errorf("RemoveNetwork = %v, want an error naming %s", err, ChainIsolation)
	}
	// All or nothing: the failed transaction left the rules in place.
	requireRules(t, ns, Rules(n))
}

func TestKernelRefusesInvalidNetwork(t *testing.T) {
	ns, fw := newKernelFirewall(t)
	bad := testNetwork("n1", "br-mine", "10.1.0.0/24")
	if err := ns.Do(func() error { return fw.EnsureNetwork(bad) }); !errors.Is(err, ErrInvalidNetwork) {
		t.Errorf("EnsureNetwork(%+v) = %v, want ErrInvalidNetwork", bad, err)
	}
	if err := ns.Do(func() error { return fw.Reconcile([]Network{bad}, nil, ownsAll) }); !errors.Is(err, ErrInvalidNetwork) {
		t.Errorf("Reconcile = %v, want ErrInvalidNetwork", err)
	}
}
