// Package iptest holds helpers for tests that compare iptables dumps.
package iptest

import "strings"

// WithoutEmptyTables drops the tables of an iptables-save dump that hold
// nothing but built-in chains with an ACCEPT policy: iptables-nft creates
// them on first use (ip6tables here), and they filter nothing, so a dump
// with them equals one without.
func WithoutEmptyTables(dump string) string {
	var out, table []string
	empty := true
	for _, l := range strings.Split(dump, "\n") {
		switch {
		case strings.HasPrefix(l, "*"):
			table, empty = []string{l}, true
		case l == "COMMIT":
			if !empty {
				out = append(out, append(table, l)...)
			}
			table = nil
		case table != nil:
			table = append(table, l)
			if !(strings.HasPrefix(l, ":") && strings.HasSuffix(l, " ACCEPT")) {
				empty = false
			}
		default:
			out = append(out, l) // outside any table (comments were stripped)
		}
	}
	return strings.Join(out, "\n")
}
