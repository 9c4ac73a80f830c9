package ownership

import "github.com/vxbridge/vxbridge/ownership/mark"

// Census counts vxbridge's kernel objects by the identity of the state file
// that made them ("": made before identities), for Input.Kernel: links by
// their alias, firewall rules by their comment (the rules of one network,
// or of one endpoint's published ports, are one object, however many lines
// and families they take), network namespaces by their name. What carries
// no vxbridge mark is not counted.
func Census(aliases, ruleTags, namespaces []string) map[string]int {
	out := map[string]int{}
	for _, a := range aliases {
		if o, ok := mark.ParseAlias(a); ok {
			out[o.Identity]++
		}
	}
	seen := map[string]bool{}
	for _, c := range ruleTags {
		if id, _, ok := mark.ParseComment(c); ok && !seen[c] {
			seen[c] = true
			out[id]++
		}
	}
	for _, n := range namespaces {
		if id, _, ok := mark.ParseNetNS(n); ok {
			out[id]++
		}
	}
	return out
}
