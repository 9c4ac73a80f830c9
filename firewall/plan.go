package firewall

import (
	"slices"
	"strconv"
	"strings"
)

// Jumps into vxbridge's chains, as `iptables -S` prints them. They carry no
// network tag: they belong to all networks of a family.
var (
	forwardJump     = ruleLine("FORWARD", []string{"-j", ChainForward})
	isolationJump   = ruleLine(ChainForward, []string{"-j", ChainIsolation})
	postroutingJump = ruleLine("POSTROUTING", []string{"-j", ChainPostrouting})
	guardJump       = ruleLine("FORWARD", []string{"-j", ChainDockerGuard}) // mangle
)

// dockerUserJump is docker's hook for operators' rules: ours go after it.
var dockerUserJump = ruleLine("FORWARD", []string{"-j", "DOCKER-USER"})

// harmlessAbove are the FORWARD rules that may sit between DOCKER-USER and
// our jump: docker 20.10's isolation chain only drops traffic between
// docker's own bridges, or returns. Any other rule above us (20.10's
// per-bridge ACCEPTs, docker 28+'s DOCKER-FORWARD, which ends in `-i
// docker0 -j ACCEPT`) could accept traffic our isolation must see first.
var harmlessAbove = map[string]bool{
	dockerUserJump: true,
	ruleLine("FORWARD", []string{"-j", "DOCKER-ISOLATION-STAGE-1"}): true,
}

// chainRef names one of our chains.
type chainRef struct{ table, chain string }

// ourChains in the order their rules are built; a chain jumped to is listed
// before the chain that jumps to it.
var ourChains = []chainRef{
	{tableFilter, ChainIsolation},
	{tableFilter, ChainForward},
	{tableNat, ChainPostrouting},
	{tableMangle, ChainDockerGuard},
	dnatChain,
	namesChain,
}

// dnatChain (see ports.go) and namesChain (the DNS redirects of cross-host
// networks) exist only while they hold a rule, with their jumps; the
// others exist while any network rule does.
var (
	dnatChain  = chainRef{tableNat, ChainDNAT}
	namesChain = chainRef{tableNat, ChainNames}
)

// jumpRef is a jump into one of our chains, from a built-in chain.
type jumpRef struct{ chain, line string }

// optionalChains are the chains that exist only while they hold a rule,
// each with the jumps into it.
var optionalChains = []struct {
	ref   chainRef
	jumps []jumpRef
}{
	{dnatChain, []jumpRef{{"PREROUTING", preroutingDNATJump}, {"OUTPUT", outputDNATJump}}},
	{namesChain, []jumpRef{{"PREROUTING", preroutingNamesJump}}},
}

func optional(c chainRef) bool { return c == dnatChain || c == namesChain }

// tableState is a table as `iptables -t T -S` lists it.
type tableState struct {
	chains map[string]bool     // every chain, built-in or not
	rules  map[string][]string // chain -> its "-A chain ..." lines, in order
}

// familyState holds the filter and nat tables of one family.
type familyState map[string]*tableState

func parseTable(listing string) *tableState {
	t := &tableState{chains: map[string]bool{}, rules: map[string][]string{}}
	for _, line := range strings.Split(listing, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "-P", "-N":
			t.chains[f[1]] = true
		case "-A":
			t.rules[f[1]] = append(t.rules[f[1]], line)
		}
	}
	return t
}

func (st familyState) rules(c chainRef) []string {
	if t := st[c.table]; t != nil {
		return t.rules[c.chain]
	}
	return nil
}

func (st familyState) exists(c chainRef) bool {
	t := st[c.table]
	return t != nil && t.chains[c.chain]
}

// syncRequest is what one operation wants of one family.
type syncRequest struct {
	desired []Rule
	// owns says whether a listed line of our chains is this operation's to
	// delete when it is not desired (it is asked of those lines only).
	// Lines it does not own are kept.
	owns func(line string) bool
	// jumpsOnly: leave our chains' contents (and their existence) alone.
	jumpsOnly bool
	// guard is what the VXLAN port rule should be (guard.go); nil: leave
	// it alone.
	guard *guardWant
}

// restoreScript is iptables-restore --noflush input, grouped by table. Each
// table's section is one transaction, so traffic never sees half a change.
type restoreScript struct {
	filter, nat, mangle []string
	// droppedDNAT are the DNAT rules the script deletes: the conntrack
	// entries of the flows they translated are flushed once it applied.
	droppedDNAT []string
}

func (s *restoreScript) add(table string, lines ...string) {
	switch table {
	case tableNat:
		s.nat = append(s.nat, lines...)
	case tableMangle:
		s.mangle = append(s.mangle, lines...)
	default:
		s.filter = append(s.filter, lines...)
	}
}

func (s *restoreScript) empty() bool { return len(s.filter)+len(s.nat)+len(s.mangle) == 0 }

// sections are the script's tables with their lines, in the order they
// are applied.
func (s *restoreScript) sections() []scriptSection {
	return []scriptSection{{tableFilter, s.filter}, {tableNat, s.nat}, {tableMangle, s.mangle}}
}

type scriptSection struct {
	table string
	lines []string
}

func (s *restoreScript) String() string {
	var b strings.Builder
	for _, t := range s.sections() {
		if len(t.lines) == 0 {
			continue
		}
		b.WriteString("*" + t.table + "\n")
		for _, l := range t.lines {
			b.WriteString(l + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// plan computes the iptables-restore input taking st to what req asks. An
// empty script means nothing to do: the common case of a periodic
// Reconcile costs only the two listings.
func plan(st familyState, req syncRequest) *restoreScript {
	s := planNetworks(st, req)
	planGuard(s, st, req.guard) // its own chain: no network's rule touches it
	return s
}

// planNetworks plans the networks' and published ports' chains.
func planNetworks(st familyState, req syncRequest) *restoreScript {
	s := &restoreScript{}
	if req.jumpsOnly {
		planJumps(s, st, st.exists(chainRef{tableFilter, ChainForward}), st.exists(chainRef{tableNat, ChainPostrouting}),
			st.exists(chainRef{tableMangle, ChainDockerGuard}))
		for _, o := range optionalChains {
			planOptionalJumps(s, st, o.jumps, st.exists(o.ref))
		}
		return s
	}
	next, changed, tagged := nextChains(st, req)
	s.droppedDNAT = missing(st.rules(dnatChain), next[dnatChain])
	if len(req.desired) == 0 && tagged == 0 {
		s.droppedDNAT = st.rules(dnatChain)
		planTeardown(s, st)
		return s
	}
	// Declaring a chain creates it or flushes it; it is then refilled in the
	// same transaction. Declarations come first, as iptables-save has them.
	for _, c := range ourChains {
		if changed[c] && (!optional(c) || len(next[c]) > 0) {
			s.add(c.table, ":"+c.chain+" - [0:0]")
		}
	}
	for _, c := range ourChains {
		if changed[c] {
			s.add(c.table, next[c]...)
		}
	}
	planJumps(s, st, true, true, true) // every chain exists by now
	for _, o := range optionalChains {
		want := len(next[o.ref]) > 0
		planOptionalJumps(s, st, o.jumps, want)
		if !want && st.exists(o.ref) {
			s.add(o.ref.table, ":"+o.ref.chain+" - [0:0]", "-X "+o.ref.chain) // after its jumps went
		}
	}
	return s
}

// nextChains returns the contents our chains should have, which of them
// differ from st, and how many network rules they hold in all.
func nextChains(st familyState, req syncRequest) (next map[chainRef][]string, changed map[chainRef]bool, tagged int) {
	want := map[chainRef][]string{} // in the order of req.desired
	wanted := map[string]bool{}     // lines carry their chain's name
	for _, r := range req.desired {
		if l := r.Line(); !wanted[l] {
			wanted[l] = true
			want[chainRef{r.Table, r.Chain}] = append(want[chainRef{r.Table, r.Chain}], l)
		}
	}
	next, changed = map[chainRef][]string{}, map[chainRef]bool{}
	for _, c := range ourChains {
		cur := st.rules(c)
		var lines []string
		seen := map[string]bool{}
		if c.chain == ChainForward {
			// VXBRIDGE-ISOLATION must see traffic before any ACCEPT here.
			lines, seen[isolationJump] = []string{isolationJump}, true
			changed[c] = len(cur) == 0 || cur[0] != isolationJump
		}
		for i, l := range cur {
			if c.chain == ChainForward && l == isolationJump && i == 0 {
				continue
			}
			if seen[l] || !wanted[l] && req.owns(l) {
				changed[c] = true // a copy, a misplaced jump, or a stale rule
				continue
			}
			seen[l] = true
			lines = append(lines, l)
		}
		for _, l := range want[c] {
			if !seen[l] {
				seen[l] = true
				lines = append(lines, l)
				changed[c] = true
			}
		}
		if !st.exists(c) && (!optional(c) || len(lines) > 0) {
			changed[c] = true
		}
		next[c] = lines
		for _, l := range lines {
			if _, ok := lineNetwork(l); ok {
				tagged++
			}
		}
	}
	return next, changed, tagged
}

// missing returns the lines of before that after lacks.
func missing(before, after []string) []string {
	keep := make(map[string]bool, len(after))
	for _, l := range after {
		keep[l] = true
	}
	var out []string
	for _, l := range before {
		if !keep[l] {
			out = append(out, l)
		}
	}
	return out
}

// planTeardown removes the jumps and our chains, leaving the tables as they
// were before vxbridge's first network.
func planTeardown(s *restoreScript, st familyState) {
	for _, j := range []struct{ table, chain, line string }{
		{tableFilter, "FORWARD", forwardJump},
		{tableNat, "POSTROUTING", postroutingJump},
		{tableNat, "PREROUTING", preroutingDNATJump},
		{tableNat, "OUTPUT", outputDNATJump},
		{tableNat, "PREROUTING", preroutingNamesJump},
		{tableMangle, "FORWARD", guardJump},
	} {
		for range countOf(st.rules(chainRef{j.table, j.chain}), j.line) {
			s.add(j.table, deleteLine(j.line))
		}
	}
	// Flush every chain before deleting any: VXBRIDGE-FORWARD refers to
	// VXBRIDGE-ISOLATION.
	for _, c := range ourChains {
		if st.exists(c) {
			s.add(c.table, ":"+c.chain+" - [0:0]")
		}
	}
	for i := len(ourChains) - 1; i >= 0; i-- {
		if c := ourChains[i]; st.exists(c) {
			s.add(c.table, "-X "+c.chain)
		}
	}
}

// planJumps puts the FORWARD, POSTROUTING and mangle FORWARD jumps where
// they belong, for those of our chains said to exist. A misplaced jump is
// deleted and inserted again in one transaction.
func planJumps(s *restoreScript, st familyState, forward, postrouting, guard bool) {
	if dels, pos, ok := placeForwardJump(st.rules(chainRef{tableFilter, "FORWARD"})); forward && !ok {
		for range dels {
			s.add(tableFilter, deleteLine(forwardJump))
		}
		s.add(tableFilter, insertLine(forwardJump, pos))
	}
	// Docker's MASQUERADE rules match their own sources only, and docker
	// has no rule in mangle FORWARD: the position of these jumps does not
	// matter, only that there is exactly one.
	onlyOne(s, st, tableNat, "POSTROUTING", postroutingJump, postrouting)
	onlyOne(s, st, tableMangle, "FORWARD", guardJump, guard)
}

// onlyOne keeps exactly one copy of jump in chain when want.
func onlyOne(s *restoreScript, st familyState, table, chain, jump string, want bool) {
	if n := countOf(st.rules(chainRef{table, chain}), jump); want && n != 1 {
		for range n {
			s.add(table, deleteLine(jump))
		}
		s.add(table, insertLine(jump, 1))
	}
}

// ForwardJumpPlaced says whether FORWARD's rules (as `iptables -S FORWARD`
// or iptables-save lists them) hold exactly one jump to VXBRIDGE-FORWARD,
// after DOCKER-USER and with no rule above it that could accept traffic
// vxbridge's isolation must see first (doctor).
func ForwardJumpPlaced(forward []string) bool {
	_, _, ok := placeForwardJump(forward)
	return ok
}

// placeForwardJump checks the jump to VXBRIDGE-FORWARD in the FORWARD
// listing. It belongs after docker's DOCKER-USER jump, so operators' rules
// win, and above every rule that is not in harmlessAbove. When it is
// misplaced (or missing, or doubled), dels copies are to be deleted and one
// inserted at 1-based position pos.
func placeForwardJump(forward []string) (dels, pos int, ok bool) {
	var others []string
	var at []int // positions of our jumps, counted in others
	for _, l := range forward {
		if l == forwardJump {
			at = append(at, len(others))
		} else {
			others = append(others, l)
		}
	}
	lo := slices.Index(others, dockerUserJump) + 1 // 0 without DOCKER-USER
	hi := lo
	for hi < len(others) && harmlessAbove[others[hi]] {
		hi++
	}
	if len(at) == 1 && at[0] >= lo && at[0] <= hi {
		return 0, 0, true
	}
	return len(at), lo + 1, false
}

// planOptionalJumps keeps exactly one of each jump into an optional chain
// while the chain is to exist (want), and none otherwise. Where they sit
// does not matter: docker's DNAT rules match other host ports than ours,
// and the names chain matches only DNS to destinations outside our
// networks.
func planOptionalJumps(s *restoreScript, st familyState, jumps []jumpRef, want bool) {
	for _, j := range jumps {
		n := countOf(st.rules(chainRef{tableNat, j.chain}), j.line)
		if want && n == 1 || !want && n == 0 {
			continue
		}
		for range n {
			s.add(tableNat, deleteLine(j.line))
		}
		if want {
			s.add(tableNat, insertLine(j.line, 1))
		}
	}
}

func countOf(lines []string, line string) int {
	n := 0
	for _, l := range lines {
		if l == line {
			n++
		}
	}
	return n
}

// deleteLine turns "-A CHAIN spec" into "-D CHAIN spec".
func deleteLine(line string) string { return "-D" + strings.TrimPrefix(line, "-A") }

// insertLine turns "-A CHAIN spec" into "-I CHAIN pos spec".
func insertLine(line string, pos int) string {
	chain, spec, _ := strings.Cut(strings.TrimPrefix(line, "-A "), " ")
	return "-I " + chain + " " + strconv.Itoa(pos) + " " + spec
}
