package firewall

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// dockerFilter is FORWARD as docker 20.10 leaves it with the default bridge
// (read from a dockerd run in a network namespace).
const dockerFilter = `-P INPUT ACCEPT
-P FORWARD DROP
-P OUTPUT ACCEPT
-N DOCKER
-N DOCKER-ISOLATION-STAGE-1
-N DOCKER-ISOLATION-STAGE-2
-N DOCKER-USER
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
`

const dockerNat = `-P PREROUTING ACCEPT
-P INPUT ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-N DOCKER
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
`

// emptyMangle is the mangle table as `iptables -t mangle -S` lists it on a
// docker host: docker puts nothing there.
const emptyMangle = "-P PREROUTING ACCEPT\n-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-P POSTROUTING ACCEPT\n"

func dockerState() familyState {
	return familyState{tableFilter: parseTable(dockerFilter), tableNat: parseTable(dockerNat), tableMangle: parseTable(emptyMangle)}
}

func cloneState(st familyState) familyState {
	out := familyState{}
	for name, t := range st {
		c := &tableState{chains: maps.Clone(t.chains), rules: map[string][]string{}}
		for ch, ls := range t.rules {
			c.rules[ch] = slices.Clone(ls)
		}
		out[name] = c
	}
	return out
}

// simulate applies an iptables-restore --noflush script to st the way
// iptables does for the commands plan emits.
func simulate(t *testing.T, st familyState, script string) {
	t.Helper()
	var tab *tableState
	for _, line := range strings.Split(strings.TrimSpace(script), "\n") {
		f := strings.Fields(line)
		switch {
		case line == "COMMIT":
			tab = nil
		case strings.HasPrefix(line, "*"):
			tab = st[line[1:]]
		case strings.HasPrefix(line, ":"):
			tab.chains[f[0][1:]] = true
			tab.rules[f[0][1:]] = nil
		case f[0] == "-A":
			if !tab.chains[f[1]] {
				t.Fatalf("%q: no chain %s", line, f[1])
			}
			tab.rules[f[1]] = append(tab.rules[f[1]], line)
		case f[0] == "-D":
			want := "-A" + strings.TrimPrefix(line, "-D")
			i := slices.Index(tab.rules[f[1]], want)
			if i < 0 {
				t.Fatalf("%q: no such rule", line)
			}
			tab.rules[f[1]] = slices.Delete(tab.rules[f[1]], i, i+1)
		case f[0] == "-I":
			pos, _ := strconv.Atoi(f[2])
			rule := "-A " + f[1] + " " + strings.Join(f[3:], " ")
			if pos < 1 || pos > len(tab.rules[f[1]])+1 {
				t.Fatalf("%q: position out of range", line)
			}
			tab.rules[f[1]] = slices.Insert(tab.rules[f[1]], pos-1, rule)
		case f[0] == "-X":
			if len(tab.rules[f[1]]) > 0 {
				t.Fatalf("%q: chain not empty", line)
			}
			delete(tab.chains, f[1])
			delete(tab.rules, f[1])
		default:
			t.Fatalf("simulate: unexpected line %q", line)
		}
	}
}

// step plans req against st, applies it, and checks that planning again
// finds nothing to do.
func step(t *testing.T, st familyState, req syncRequest) string {
	t.Helper()
	script := plan(st, req).String()
	simulate(t, st, script)
	if again := plan(st, req); !again.empty() {
		t.Fatalf("second plan not empty after\n%s\nsecond:\n%s", script, again)
	}
	return script
}

func ensureReq(n Network) syncRequest {
	return syncRequest{desired: familyOnly(Rules(n), false), owns: func(l string) bool { return taggedWith(l, n.ID) }}
}

func removeReq(id string) syncRequest {
	return syncRequest{owns: func(l string) bool { return taggedWith(l, id) }}
}

func reconcileReq(nets ...Network) syncRequest {
	var rules []Rule
	for _, n := range nets {
		rules = append(rules, familyOnly(Rules(n), false)...)
	}
	return syncRequest{desired: rules, owns: func(string) bool { return true }}
}

func familyOnly(rules []Rule, ipv6 bool) []Rule {
	var out []Rule
	for _, r := range rules {
		if r.IPv6 == ipv6 {
			out = append(out, r)
		}
	}
	return out
}

func chainLines(st familyState, table, chain string) []string {
	return st[table].rules[chain]
}

func TestPlanEnsureThenRemoveRestoresState(t *testing.T) {
	before := dockerState()
	st := cloneState(before)
	a := testNetwork("aaa", "vxb-a", "10.1.0.0/24")
	b := testNetwork("bbb", "vxb-b", "10.2.0.0/24")
	step(t, st, ensureReq(a))
	step(t, st, ensureReq(b))

	fwd := chainLines(st, tableFilter, "FORWARD")
	if fwd[0] != dockerUserJump || fwd[1] != forwardJump {
		t.Errorf("FORWARD starts %q, want DOCKER-USER then our jump", fwd[:2])
	}
	if got := chainLines(st, tableFilter, ChainForward); got[0] != isolationJump || len(got) != 7 {
		t.Errorf("VXBRIDGE-FORWARD = %q, want the isolation jump and 3 rules per network", got)
	}
	if got := chainLines(st, tableNat, "POSTROUTING"); got[0] != postroutingJump || len(got) != 2 {
		t.Errorf("POSTROUTING = %q", got)
	}

	step(t, st, removeReq("aaa"))
	for _, c := range ourChains {
		for _, l := range chainLines(st, c.table, c.chain) {
			if taggedWith(l, "aaa") {
				t.Errorf("removed network's rule left: %q", l)
			}
		}
	}
	step(t, st, removeReq("bbb"))
	if diff := stateDiff(before, st); diff != "" {
		t.Errorf("after removing every network the tables differ from before:\n%s", diff)
	}
	if s := plan(st, removeReq("unknown")); !s.empty() {
		t.Errorf("removing an unknown network plans %q", s)
	}
}

// withRules drops the chains without rules: a built-in chain emptied again
// is the chain as it was.
func withRules(rules map[string][]string) map[string][]string {
	out := maps.Clone(rules)
	maps.DeleteFunc(out, func(_ string, r []string) bool { return len(r) == 0 })
	return out
}

func stateDiff(a, b familyState) string {
	var out []string
	for name := range a {
		if !maps.Equal(a[name].chains, b[name].chains) {
			out = append(out, fmt.Sprintf("%s chains %v != %v", name, slices.Sorted(maps.Keys(a[name].chains)), slices.Sorted(maps.Keys(b[name].chains))))
		}
		if !maps.EqualFunc(withRules(a[name].rules), withRules(b[name].rules), slices.Equal) {
			out = append(out, fmt.Sprintf("%s rules %q != %q", name, a[name].rules, b[name].rules))
		}
	}
	return strings.Join(out, "\n")
}

func TestPlanEnsureKeepsOthersAndDropsOwnStale(t *testing.T) {
	st := dockerState()
	a := testNetwork("aaa", "vxb-a", "10.1.0.0/24")
	b := testNetwork("bbb", "vxb-b", "10.2.0.0/24")
	step(t, st, reconcileReq(a, b))
	stale := `-A VXBRIDGE-FORWARD -i vxb-old -m comment --comment "vxbridge:aaa" -j ACCEPT`
	foreign := `-A VXBRIDGE-ISOLATION -i x -j DROP`
	st[tableFilter].rules[ChainForward] = append(st[tableFilter].rules[ChainForward], stale)
	st[tableFilter].rules[ChainIsolation] = append(st[tableFilter].rules[ChainIsolation], foreign)

	step(t, st, ensureReq(a))
	if slices.Contains(chainLines(st, tableFilter, ChainForward), stale) {
		t.Errorf("EnsureNetwork kept a stale rule of its own network")
	}
	if !slices.Contains(chainLines(st, tableFilter, ChainIsolation), foreign) {
		t.Errorf("EnsureNetwork deleted a rule it does not own")
	}
	step(t, st, reconcileReq(a))
	iso := chainLines(st, tableFilter, ChainIsolation)
	if slices.Contains(iso, foreign) {
		t.Errorf("Reconcile kept an untagged rule in our chain")
	}
	for _, l := range iso {
		if taggedWith(l, "bbb") {
			t.Errorf("Reconcile kept the rule of a network not listed: %q", l)
		}
	}
}

func TestPlanRefillsFlushedChainAndFixesIsolationJump(t *testing.T) {
	st := dockerState()
	a := testNetwork("aaa", "vxb-a", "10.1.0.0/24")
	step(t, st, reconcileReq(a))
	want := slices.Clone(chainLines(st, tableFilter, ChainForward))

	st[tableFilter].rules[ChainForward] = nil // iptables -F VXBRIDGE-FORWARD
	step(t, st, reconcileReq(a))
	if got := chainLines(st, tableFilter, ChainForward); !slices.Equal(got, want) {
		t.Errorf("after a flush: %q, want %q", got, want)
	}

	// The isolation jump pushed below an ACCEPT, and doubled.
	r := st[tableFilter].rules[ChainForward]
	st[tableFilter].rules[ChainForward] = append(slices.Clone(r[1:]), isolationJump, isolationJump)
	script := step(t, st, reconcileReq(a))
	if got := chainLines(st, tableFilter, ChainForward); got[0] != isolationJump || countOf(got, isolationJump) != 1 {
		t.Errorf("isolation jump not first and single: %q (script %s)", got, script)
	}
}

func TestPlanMovesJumpBackAboveDockerRules(t *testing.T) {
	st := dockerState()
	step(t, st, reconcileReq(testNetwork("aaa", "vxb-a", "10.1.0.0/24")))
	// What docker 20.10 does on `docker network create`: its new bridge's
	// rules at the top, then its two jumps re-inserted above them.
	fwd := st[tableFilter].rules["FORWARD"]
	fwd = slices.DeleteFunc(fwd, func(l string) bool {
		return l == dockerUserJump || strings.HasSuffix(l, "-j DOCKER-ISOLATION-STAGE-1")
	})
	fwd = append([]string{
		dockerUserJump,
		"-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
		"-A FORWARD -o br-1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-A FORWARD -i br-1 ! -o br-1 -j ACCEPT",
	}, fwd...)
	st[tableFilter].rules["FORWARD"] = fwd

	script := step(t, st, syncRequest{jumpsOnly: true})
	want := "*filter\n-D FORWARD -j VXBRIDGE-FORWARD\n-I FORWARD 2 -j VXBRIDGE-FORWARD\nCOMMIT\n"
	if script != want {
		t.Errorf("script:\n%s\nwant:\n%s", script, want)
	}
}

func TestPlanJumpsOnlyWithoutChainsDoesNothing(t *testing.T) {
	if s := plan(dockerState(), syncRequest{jumpsOnly: true}); !s.empty() {
		t.Errorf("jumps planned without our chains: %s", s)
	}
}

func TestPlaceForwardJump(t *testing.T) {
	const (
		us      = "-A FORWARD -j VXBRIDGE-FORWARD"
		user    = "-A FORWARD -j DOCKER-USER"
		iso     = "-A FORWARD -j DOCKER-ISOLATION-STAGE-1"
		accept  = "-A FORWARD -i br-1 ! -o br-1 -j ACCEPT"
		dfwd    = "-A FORWARD -j DOCKER-FORWARD" // docker 28
		foreign = "-A FORWARD -i eth9 -j ACCEPT"
	)
	for _, c := range []struct {
		forward   []string
		ok        bool
		dels, pos int
	}{
		{nil, false, 0, 1},
		{[]string{accept}, false, 0, 1},
		{[]string{us, accept}, true, 0, 0},
		{[]string{user, us, iso, accept}, true, 0, 0},
		{[]string{user, iso, us, accept}, true, 0, 0},
		{[]string{us, user, iso}, false, 1, 2},
		{[]string{user, iso, accept, us}, false, 1, 2},
		{[]string{user, dfwd, us}, false, 1, 2},
		{[]string{foreign, us}, false, 1, 1},
		{[]string{foreign, user, us}, true, 0, 0}, // above DOCKER-USER is the operator's place
		{[]string{us, us}, false, 2, 1},
	} {
		dels, pos, ok := placeForwardJump(c.forward)
		if ok != c.ok || dels != c.dels || pos != c.pos {
			t.Errorf("placeForwardJump(%q) = %d, %d, %v; want %d, %d, %v", c.forward, dels, pos, ok, c.dels, c.pos, c.ok)
		}
	}
}

func TestPlanDedupsPostroutingJump(t *testing.T) {
	st := dockerState()
	step(t, st, reconcileReq(testNetwork("aaa", "vxb-a", "10.1.0.0/24")))
	st[tableNat].rules["POSTROUTING"] = append(st[tableNat].rules["POSTROUTING"], postroutingJump)
	step(t, st, reconcileReq(testNetwork("aaa", "vxb-a", "10.1.0.0/24")))
	if n := countOf(st[tableNat].rules["POSTROUTING"], postroutingJump); n != 1 {
		t.Errorf("%d POSTROUTING jumps", n)
	}
}

func TestFailedLine(t *testing.T) {
	script := "*filter\n-A X -j DROP\n-D FORWARD -j NOPE\nCOMMIT\n"
	if got := failedLine("iptables-restore: line 3 failed", script); got != "-D FORWARD -j NOPE" {
		t.Errorf("failedLine = %q", got)
	}
	if got := failedLine("Error occurred at line: 2", script); got != "-A X -j DROP" {
		t.Errorf("failedLine = %q", got)
	}
	if got := failedLine("no number", script); got != "" {
		t.Errorf("failedLine = %q", got)
	}
}

func TestPlanJumpsOnlyLeavesMissingChainAlone(t *testing.T) {
	st := dockerState()
	step(t, st, reconcileReq(testNetwork("aaa", "vxb-a", "10.1.0.0/24")))
	// Someone removed the nat side; EnsureJumps must not jump to nothing.
	st[tableNat].rules["POSTROUTING"] = slices.DeleteFunc(st[tableNat].rules["POSTROUTING"], func(l string) bool { return l == postroutingJump })
	delete(st[tableNat].chains, ChainPostrouting)
	if s := plan(st, syncRequest{jumpsOnly: true}); !s.empty() {
		t.Errorf("EnsureJumps plans %s", s)
	}
	step(t, st, reconcileReq(testNetwork("aaa", "vxb-a", "10.1.0.0/24")))
	if countOf(st[tableNat].rules["POSTROUTING"], postroutingJump) != 1 || !st.exists(chainRef{tableNat, ChainPostrouting}) {
		t.Errorf("Reconcile did not rebuild the nat chain and jump")
	}
}

// TestPlanNamesChainLivesWithItsRules: the DNS redirects of a cross-host
// network make VXBRIDGE-DNS and its PREROUTING jump; with the last such
// network gone both go, whatever other networks remain.
func TestPlanNamesChainLivesWithItsRules(t *testing.T) {
	before := dockerState()
	st := cloneState(before)
	a := testNetwork("aaa", "vxb-a", "10.1.0.0/24")
	x := testNetwork("xxx", "vxb-x", "10.90.0.0/24")
	x.NamesPort = 5335
	step(t, st, ensureReq(a))
	if st[tableNat].chains[ChainNames] {
		t.Fatal("a network without names made the names chain")
	}
	step(t, st, ensureReq(x))
	want := []string{
		`-A VXBRIDGE-DNS ! -d 10.90.0.0/24 -i vxb-x -p udp -m udp --dport 53 -m comment --comment "vxbridge:xxx" -j REDIRECT --to-ports 5335`,
		`-A VXBRIDGE-DNS ! -d 10.90.0.0/24 -i vxb-x -p tcp -m tcp --dport 53 -m comment --comment "vxbridge:xxx" -j REDIRECT --to-ports 5335`,
	}
	if got := chainLines(st, tableNat, ChainNames); !slices.Equal(got, want) {
		t.Fatalf("VXBRIDGE-DNS = %q, want %q", got, want)
	}
	if n := countOf(chainLines(st, tableNat, "PREROUTING"), preroutingNamesJump); n != 1 {
		t.Fatalf("%d jumps into VXBRIDGE-DNS", n)
	}
	// Someone deletes the jump: a reconcile puts it back.
	st[tableNat].rules["PREROUTING"] = slices.DeleteFunc(st[tableNat].rules["PREROUTING"], func(l string) bool { return l == preroutingNamesJump })
	step(t, st, reconcileReq(a, x))
	if n := countOf(chainLines(st, tableNat, "PREROUTING"), preroutingNamesJump); n != 1 {
		t.Fatalf("%d jumps into VXBRIDGE-DNS after reconcile", n)
	}
	internal := x
	internal.Internal = true
	if rules := Rules(internal); slices.ContainsFunc(rules, func(r Rule) bool { return r.Chain == ChainNames }) {
		t.Fatal("an internal network's queries are redirected")
	}
	step(t, st, removeReq("xxx"))
	if st[tableNat].chains[ChainNames] || countOf(chainLines(st, tableNat, "PREROUTING"), preroutingNamesJump) != 0 {
		t.Fatal("the names chain or its jump outlived the last network with names")
	}
	step(t, st, removeReq("aaa"))
	if diff := stateDiff(before, st); diff != "" {
		t.Errorf("after removing every network the tables differ from before:\n%s", diff)
	}
}

// TestHostAddrsSNAT: the host's own traffic into a cross-host network
// leaves from its own address, per family; nothing for other networks.
func TestHostAddrsSNAT(t *testing.T) {
	x := testNetwork("xxx", "vxb-x", "10.90.0.0/24")
	x.Subnets = append(x.Subnets, netip.MustParsePrefix("fd90::/64"))
	x.HostAddrs = []netip.Addr{netip.MustParseAddr("10.90.0.70"), netip.MustParseAddr("fd90::70")}
	x.Gateways = []netip.Addr{netip.MustParseAddr("10.90.0.1"), netip.MustParseAddr("fd90::1")}
	var got []string
	for _, r := range Rules(x) {
		if r.Chain == ChainPostrouting && slices.Contains(r.Spec, "SNAT") {
			got = append(got, fmt.Sprint(r.IPv6, " ", r.Line()))
		}
	}
	want := []string{
		`false -A VXBRIDGE-POSTROUTING -s 10.90.0.1/32 -o vxb-x -m comment --comment "vxbridge:xxx" -j SNAT --to-source 10.90.0.70`,
		`true -A VXBRIDGE-POSTROUTING -s fd90::1/128 -o vxb-x -m comment --comment "vxbridge:xxx" -j SNAT --to-source fd90::70`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("SNAT rules\n%q\nwant\n%q", got, want)
	}
	st := dockerState()
	step(t, st, ensureReq(x))
	step(t, st, removeReq("xxx"))
}
