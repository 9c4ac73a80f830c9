package firewall

import (
	"slices"
	"strings"
	"testing"
)

func guardReq(port int, req syncRequest) syncRequest {
	req.guard = &guardWant{lines: guardRules(port, false)}
	return req
}

// TestPlanGuard: the VXLAN port rule gets its chain and the first place in
// INPUT, stays when networks come and go (the last one's teardown
// included), moves back to the top when pushed down, follows a new port,
// and goes with its jump when no longer wanted; unknown (nil) changes
// nothing.
func TestPlanGuard(t *testing.T) {
	before := dockerState()
	st := cloneState(before)
	st[tableFilter].rules["INPUT"] = []string{"-A INPUT -i lo -j ACCEPT"}
	step(t, st, guardReq(4789, syncRequest{jumpsOnly: true}))
	input := chainLines(st, tableFilter, "INPUT")
	if len(input) != 2 || input[0] != inputJump {
		t.Fatalf("INPUT = %q, want our jump first", input)
	}
	want := guardRules(4789, false)
	if got := chainLines(st, tableFilter, ChainInput); !slices.Equal(got, want) {
		t.Fatalf("%s = %q, want %q", ChainInput, got, want)
	}
	if !strings.Contains(want[0], "--dport 4789 -m set ! --match-set vxbridge-vtep4 src") {
		t.Fatalf("rule %q", want[0])
	}

	a := testNetwork("aaa", "vxb-a", "10.1.0.0/24")
	step(t, st, guardReq(4789, ensureReq(a)))
	step(t, st, guardReq(4789, removeReq("aaa"))) // the last network: its chains go
	if got := chainLines(st, tableFilter, ChainInput); !slices.Equal(got, want) {
		t.Fatalf("after the last network went: %s = %q", ChainInput, got)
	}
	if s := plan(st, syncRequest{jumpsOnly: true}); !s.empty() {
		t.Fatalf("guard unknown: planned %q", s)
	}

	// Someone inserts above it; someone flushes the chain.
	st[tableFilter].rules["INPUT"] = append([]string{"-A INPUT -p udp -j ACCEPT"}, st[tableFilter].rules["INPUT"]...)
	step(t, st, guardReq(4789, syncRequest{jumpsOnly: true}))
	if chainLines(st, tableFilter, "INPUT")[0] != inputJump {
		t.Fatalf("INPUT = %q, want our jump back on top", chainLines(st, tableFilter, "INPUT"))
	}
	st[tableFilter].rules[ChainInput] = nil
	step(t, st, guardReq(8472, syncRequest{jumpsOnly: true}))
	if got := chainLines(st, tableFilter, ChainInput); !slices.Equal(got, guardRules(8472, false)) {
		t.Fatalf("after a flush and a new port: %q", got)
	}

	step(t, st, syncRequest{jumpsOnly: true, guard: &guardWant{}})
	st[tableFilter].rules["INPUT"] = st[tableFilter].rules["INPUT"][1:] // the operator's ACCEPT
	if diff := stateDiff(func() familyState {
		b := cloneState(before)
		b[tableFilter].rules["INPUT"] = []string{"-A INPUT -i lo -j ACCEPT"}
		return b
	}(), st); diff != "" {
		t.Fatalf("after the rule went:\n%s", diff)
	}
}
