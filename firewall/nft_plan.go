package firewall

// The nftables backend applies the same plan as the iptables one: plan.go
// writes an iptables-restore script against a listing, and nftBatch turns
// that script into the operations of one nf_tables batch on vxbridge's own
// table. The vocabulary is plan.go's: declare (create or flush) a chain,
// append, insert at a position, delete a rule, delete a chain. The batch is
// one transaction, like iptables-restore's COMMIT: traffic sees the table
// before or after it, never between.

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
)

// NFTTable is the name of vxbridge's nftables table, one in each of the ip
// and ip6 families, beside docker's docker-bridges tables.
const NFTTable = "vxbridge"

// nftListing is vxbridge's table of one family as read.
type nftListing struct {
	exists bool
	chains map[string]*nftChainListing // by nftables chain name
	sets   map[string]string           // the table's sets: name -> key type (nft_sets_linux.go)
}

type nftChainListing struct {
	rules []nftListedRule
	// present are lines a declaration found already in place: their
	// appends in the same script are no-ops (see keepOrFlush).
	present map[string]bool
}

// nftListedRule is a rule as read back: its line as `iptables -S` would
// print it (see decodeRule) and its handle.
type nftListedRule struct {
	line   string
	handle uint64
}

// state is the listing as plan.go reads listings.
func (l *nftListing) state() familyState {
	st := familyState{tableFilter: parseTable(""), tableNat: parseTable(""), tableMangle: parseTable("")}
	for name, c := range l.chains {
		table, chain, ok := iptablesChain(name)
		if !ok {
			continue // not ours to plan; tearing the table down removes it
		}
		st[table].chains[chain] = true
		for _, r := range c.rules {
			st[table].rules[chain] = append(st[table].rules[chain], r.line)
		}
	}
	return st
}

// saveText prints one table of a state in iptables-save's form, chains in
// name order; built-in chains show policy ACCEPT, which vxbridge's base
// chains have.
func saveText(table string, t *tableState) string {
	var b strings.Builder
	b.WriteString("*" + table + "\n")
	chains := slices.Sorted(maps.Keys(t.chains))
	for _, c := range chains {
		policy := "-"
		if isBaseChain(nftChainName(table, c)) {
			policy = "ACCEPT"
		}
		b.WriteString(":" + c + " " + policy + " [0:0]\n")
	}
	for _, c := range chains {
		for _, r := range t.rules[c] {
			b.WriteString(r + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

type nftOpKind int

const (
	nftAddTable nftOpKind = iota
	nftDelTable
	nftAddChain // a base chain when baseChains has it
	nftFlushChain
	nftDelChain
	nftAddRule    // at the end, or after the rule whose handle is after
	nftInsertRule // at the start
	nftDelRule
)

// nftOp is one operation of a batch.
type nftOp struct {
	kind    nftOpKind
	chain   string // nftables name
	exprs   []expr.Any
	comment string
	handle  uint64 // nftDelRule: the rule; nftAddRule: the rule to add after (0: at the end)
}

// nftBatch turns script into the operations that take l to what the script
// asks. When nothing would be left in the table, the batch deletes it: the
// ruleset is then as it was before vxbridge's first network.
func nftBatch(ipv6 bool, l *nftListing, s *restoreScript) ([]nftOp, error) {
	sim := &nftListing{exists: l.exists, chains: map[string]*nftChainListing{}, sets: l.sets}
	for name, c := range l.chains {
		sim.chains[name] = &nftChainListing{rules: slices.Clone(c.rules)}
	}
	var ops []nftOp
	for _, sec := range s.sections() {
		for i, line := range sec.lines {
			more, err := sim.step(ipv6, sec.table, line, sec.lines[i+1:])
			if err != nil {
				return nil, err
			}
			ops = append(ops, more...)
		}
	}
	switch {
	case sim.empty() && l.exists:
		return []nftOp{{kind: nftDelTable}}, nil
	case sim.empty() || len(ops) == 0:
		return nil, nil
	case !l.exists:
		ops = append([]nftOp{{kind: nftAddTable}}, ops...)
	}
	return ops, nil
}

// empty: no set, no rule in any chain, and no chain but base chains.
func (l *nftListing) empty() bool {
	if len(l.sets) > 0 {
		return false
	}
	for name, c := range l.chains {
		if len(c.rules) > 0 || !isBaseChain(name) {
			return false
		}
	}
	return true
}

// step applies one script line to the simulated listing and returns its
// operations; rest are the lines of the table's section after it.
func (l *nftListing) step(ipv6 bool, table, line string, rest []string) ([]nftOp, error) {
	if name, ok := strings.CutPrefix(line, ":"); ok {
		ipt := strings.Fields(name)[0]
		chain := nftChainName(table, ipt)
		if c, ok := l.chains[chain]; ok {
			return c.keepOrFlush(chain, refillOf(ipt, rest)), nil
		}
		l.chains[chain] = &nftChainListing{}
		return []nftOp{{kind: nftAddChain, chain: chain}}, nil
	}
	words := splitLine(line)
	if len(words) < 2 {
		return nil, fmt.Errorf("nftables: script line %q", line)
	}
	verb, chain := words[0], nftChainName(table, words[1])
	switch verb {
	case "-X":
		delete(l.chains, chain)
		return []nftOp{{kind: nftDelChain, chain: chain}}, nil
	case "-D":
		return l.deleteRule(chain, ruleLine(words[1], words[2:]))
	case "-A", "-I":
		if c := l.chains[chain]; c != nil && words[0] == "-A" && c.present[line] {
			delete(c.present, line) // a declaration kept it in place
			return nil, nil
		}
		return l.addRule(ipv6, table, chain, words)
	}
	return nil, fmt.Errorf("nftables: script line %q", line)
}

// refillOf are the rules a script appends to chain after declaring it.
func refillOf(chain string, rest []string) []string {
	var out []string
	for _, l := range rest {
		if strings.HasPrefix(l, "-A "+chain+" ") {
			out = append(out, l)
		}
	}
	return out
}

// keepOrFlush declares an existing chain that the script then refills
// with refill. iptables-restore flushes and refills it; here, when the
// rules already there that refill keeps are in refill's order and come
// first in it (plan.go keeps a chain's rules in place and appends new
// ones), only the others are deleted and the missing appended: a batch the
// size of the change, not of the chain (1000 published ports are 3000
// rules), with the same end result. Otherwise the chain is flushed.
func (c *nftChainListing) keepOrFlush(chain string, refill []string) []nftOp {
	want := make(map[string]bool, len(refill))
	for _, r := range refill {
		want[r] = true
	}
	var kept []nftListedRule
	var dels []nftOp
	c.present = map[string]bool{}
	for _, r := range c.rules {
		if want[r.line] && !c.present[r.line] && r.handle != 0 {
			c.present[r.line] = true
			kept = append(kept, r)
			continue
		}
		dels = append(dels, nftOp{kind: nftDelRule, chain: chain, handle: r.handle})
	}
	inPlace := len(refill) > 0 && !slices.ContainsFunc(dels, func(o nftOp) bool { return o.handle == 0 })
	for i, r := range kept {
		inPlace = inPlace && refill[i] == r.line
	}
	if !inPlace {
		c.rules, c.present = nil, nil
		return []nftOp{{kind: nftFlushChain, chain: chain}}
	}
	c.rules = kept
	return dels
}

func (l *nftListing) deleteRule(chain, line string) ([]nftOp, error) {
	c := l.chains[chain]
	if c != nil {
		for i, r := range c.rules {
			if r.line == line && r.handle != 0 {
				c.rules = slices.Delete(c.rules, i, i+1)
				return []nftOp{{kind: nftDelRule, chain: chain, handle: r.handle}}, nil
			}
		}
	}
	return nil, fmt.Errorf("nftables: no rule %q to delete", line)
}

// addRule appends (-A) or inserts (-I CHAIN POS) a rule, creating the base
// chain it goes in when it is missing.
func (l *nftListing) addRule(ipv6 bool, table, chain string, words []string) ([]nftOp, error) {
	var ops []nftOp
	c := l.chains[chain]
	if c == nil {
		if !isBaseChain(chain) {
			return nil, fmt.Errorf("nftables: rule for chain %s, which does not exist", chain)
		}
		c = &nftChainListing{}
		l.chains[chain] = c
		ops = append(ops, nftOp{kind: nftAddChain, chain: chain})
	}
	spec, pos := words[2:], len(c.rules)+1
	if words[0] == "-I" {
		n, err := strconv.Atoi(words[2])
		if err != nil || n < 1 || n > len(c.rules)+1 {
			return nil, fmt.Errorf("nftables: insert at %q in %s", words[2], chain)
		}
		spec, pos = words[3:], n
	}
	exprs, comment, err := renderRule(ipv6, table, spec)
	if err != nil {
		return nil, err
	}
	op := nftOp{kind: nftAddRule, chain: chain, exprs: exprs, comment: comment}
	switch {
	case pos == 1 && len(c.rules) > 0:
		op.kind = nftInsertRule
	case pos > 1 && pos <= len(c.rules):
		if op.handle = c.rules[pos-2].handle; op.handle == 0 {
			return nil, fmt.Errorf("nftables: insert at %d in %s after a rule of the same batch", pos, chain)
		}
	}
	c.rules = slices.Insert(c.rules, pos-1, nftListedRule{line: ruleLine(words[1], spec)})
	return append(ops, op), nil
}
