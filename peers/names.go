package peers

import (
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
)

// Names is a read-only snapshot of the container names of one cross-host
// network's other hosts, as their endpoint records publish them. The
// network's follower makes a new one whenever its records change and
// swaps it in whole, so a DNS answer reads it without a lock and never
// waits for the follower, nor the follower for it.
//
// A record counts as the table lets it reach the kernel: its host is a
// member with a usable VTEP, and the address it answers is one it holds
// (not lost to an older claim, not this host's own). A name two records
// claim answers both addresses, as docker does for an alias two containers
// share. Names of a host that went away go with its records.
type Names struct {
	VNI    uint32
	byName map[string][]netip.Addr // "web" and "web.xnet", lower case
	byAddr map[netip.Addr]string   // "web.xnet"
}

// NameEntry is one published name and the addresses it answers.
type NameEntry struct {
	Name  string // "web.xnet", or "web" when the record has no domain
	Addrs []netip.Addr
}

// Lookup returns the addresses of name ("web" or "web.xnet", any case,
// with or without the final dot), sorted; nil when no record has it.
func (n *Names) Lookup(name string) []netip.Addr {
	if n == nil {
		return nil
	}
	return n.byName[normalName(name)]
}

// Reverse returns the name.domain published for addr.
func (n *Names) Reverse(addr netip.Addr) (string, bool) {
	if n == nil {
		return "", false
	}
	s, ok := n.byAddr[addr.Unmap()]
	return s, ok
}

// Len is the number of addresses named.
func (n *Names) Len() int {
	if n == nil {
		return 0
	}
	return len(n.byAddr)
}

// Entries lists every full name with its addresses, sorted by name.
func (n *Names) Entries() []NameEntry {
	if n == nil {
		return nil
	}
	by := map[string][]netip.Addr{}
	for a, name := range n.byAddr {
		by[name] = append(by[name], a)
	}
	out := make([]NameEntry, 0, len(by))
	for name, addrs := range by {
		slices.SortFunc(addrs, netip.Addr.Compare)
		out = append(out, NameEntry{Name: name, Addrs: addrs})
	}
	slices.SortFunc(out, func(a, b NameEntry) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func normalName(s string) string { return strings.ToLower(strings.TrimSuffix(s, ".")) }

// names builds the snapshot of the table's named records.
func (t *table) names(vni uint32) *Names {
	n := &Names{VNI: vni, byName: map[string][]netip.Addr{}, byAddr: map[netip.Addr]string{}}
	for _, r := range t.recs {
		if r.ep.Name == "" || !t.eligible(r) {
			continue
		}
		full := r.ep.Name
		if r.ep.Domain != "" {
			full += "." + r.ep.Domain
		}
		for _, ip := range r.ips {
			if t.ipOwner(ip) != r {
				continue
			}
			n.byAddr[ip] = normalName(full)
			for _, key := range []string{normalName(r.ep.Name), normalName(full)} {
				if !slices.Contains(n.byName[key], ip) {
					n.byName[key] = append(n.byName[key], ip)
				}
			}
		}
	}
	for _, addrs := range n.byName {
		slices.SortFunc(addrs, netip.Addr.Compare)
	}
	return n
}

// namesIndex finds the network of a source address: the followed networks'
// subnets with their current snapshot, swapped in whole by Attach and
// Detach, read without a lock.
type namesIndex struct{ p atomic.Pointer[[]indexEntry] }

type indexEntry struct {
	subnets []netip.Prefix
	f       *follower
}

func (x *namesIndex) set(entries []indexEntry) { x.p.Store(&entries) }

func (x *namesIndex) lookup(src netip.Addr) *Names {
	es := x.p.Load()
	if es == nil {
		return nil
	}
	src = src.Unmap()
	for _, e := range *es {
		if slices.ContainsFunc(e.subnets, func(p netip.Prefix) bool { return p.Contains(src) }) {
			return e.f.names.Load()
		}
	}
	return nil
}

// NamesFor returns the names snapshot of the cross-host network whose
// subnet holds src (a container's address), nil for any other source. It
// takes no lock: a DNS query flood never delays the followers or docker's
// calls.
func (m *Manager) NamesFor(src netip.Addr) *Names { return m.index.lookup(src) }

// reindexLocked rebuilds the index after the followed networks changed.
// m.mu held.
func (m *Manager) reindexLocked() {
	entries := make([]indexEntry, 0, len(m.nets))
	for _, f := range m.nets {
		entries = append(entries, indexEntry{subnets: slices.Clone(f.subnets), f: f})
	}
	m.index.set(entries)
}
