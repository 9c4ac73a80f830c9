package peers

import (
	"cmp"
	"slices"
	"strings"
)

// Records that are not what their hosts wrote. package cluster believes a
// host's own copy of each of its network records and says which network
// records did not agree (cluster.Change.Forged): someone else wrote,
// rewrote or deleted them. The table never sees them; they are logged,
// counted with the refused claims, and listed by vxbridge status, for as
// long as they stay in etcd.

// resetForged replaces the forged records with a listing's, noting the
// new ones.
func (f *follower) resetForged(now map[string]string) {
	for key := range f.forged {
		if _, still := now[key]; !still {
			f.noteForged(key, "")
		}
	}
	for key, why := range now {
		f.noteForged(key, why)
	}
}

// noteForged records why the network's record at key (a change's Key) is
// not its host's ("": it is, or it is gone).
func (f *follower) noteForged(key, why string) {
	switch old, ok := f.forged[key]; {
	case why == "" && ok:
		delete(f.forged, key)
	case why == "" || why == old:
		return
	default:
		f.forged[key] = why
		f.m.log.Warn("cross-host: a network record is not what its host wrote; believing the host's own copy",
			"vni", f.vni, "record", recordName(key), "why", why)
		f.m.conflicts.Add(1)
	}
	f.forgedGen++
}

// forgedConflicts lists the forged records as refused claims, sorted.
func (f *follower) forgedConflicts() []Conflict {
	out := make([]Conflict, 0, len(f.forged))
	for key, why := range f.forged {
		name := recordName(key)
		host, _, _ := strings.Cut(name, "/")
		out = append(out, Conflict{Endpoint: name, What: "record", Value: "forged: " + why, Holder: host + " (its own copy)"})
	}
	slices.SortFunc(out, func(a, b Conflict) int { return cmp.Compare(a.Endpoint, b.Endpoint) })
	return out
}

// recordName is "<host>" for a member record's key ("m/<host>") and
// "<host>/<endpoint>" for an endpoint record's ("e/<host>/<endpoint>").
func recordName(key string) string {
	_, name, _ := strings.Cut(key, "/")
	return name
}
