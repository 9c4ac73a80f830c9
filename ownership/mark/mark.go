// Package mark spells the marks that tie a kernel object to the state file
// that made it, and reads them back: the alias of every link vxbridge makes,
// the comment of every firewall rule, the name of every network namespace.
//
// Each mark carries the identity of the state file in use (store.DB.Identity,
// 12 hex digits), so that a vxbridge deletes only what its own state file
// made (package ownership). Objects made before identities carry the old
// marks, without one; Parse* read both and report "" as their identity:
//
//	link alias      vxbridge:<identity>:<kind>:<id>   old: vxbridge:<kind>:<id>
//	rule comment    vxbridge:<identity>:<id>          old: vxbridge:<id>
//	namespace name  vxbridge-<identity>-<12 of id>    old: vxbridge-<12 of id>
//
// Lengths: an alias holds at most 255 bytes (IFALIASZ); the longest mark,
// a VXLAN device's with a 64-digit docker id, is 92. A rule comment holds
// 256; a published port's, which names network and endpoint, is 151.
//
// A kind never has the form of an identity, so an alias reads one way only.
// A rule comment's first field is the identity when it has that form and
// more follows; an old port rule's comment (vxbridge:<network>:<endpoint>)
// could read otherwise only for a network id of exactly 12 hex digits, and
// docker's ids have 64.
//
// The package is pure and imports nothing of vxbridge's: the store, the
// driver, the firewall, doctor and the tests all spell marks through it.
package mark

import "strings"

// Prefix starts every alias and rule comment vxbridge writes.
const Prefix = "vxbridge:"

// IdentityLen is the length of a state file's identity (hex digits).
const IdentityLen = 12

// ValidIdentity says whether s has the form of a state file's identity.
func ValidIdentity(s string) bool {
	if len(s) != IdentityLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// The kinds of link vxbridge marks.
const (
	Net      = "net"   // a network's bridge, or the host end of its gateway link
	Endpoint = "ep"    // the host end of an endpoint's veth
	VXLAN    = "vxlan" // a cross-host network's VXLAN device
	Gateway  = "gw"    // the inner end of a network's gateway link
)

// Owner is what a mark says: the state file that made the object
// (Identity, "" before identities) and the record that claims it.
type Owner struct {
	Identity string
	Kind     string // for links: Net, Endpoint, VXLAN or Gateway
	ID       string // the network's or endpoint's docker id
}

// withIdentity is Prefix, then identity and a colon when there is one.
func withIdentity(identity string) string {
	if identity == "" {
		return Prefix
	}
	return Prefix + identity + ":"
}

// splitIdentity reads the identity off s (what follows Prefix) when s
// starts with one followed by a colon and something more.
func splitIdentity(s string) (identity, rest string) {
	if len(s) > IdentityLen+1 && s[IdentityLen] == ':' && ValidIdentity(s[:IdentityLen]) {
		return s[:IdentityLen], s[IdentityLen+1:]
	}
	return "", s
}

// Alias is the alias of a link of kind for record id, made from the state
// file of identity ("": the old form, without one).
func Alias(identity, kind, id string) string { return withIdentity(identity) + kind + ":" + id }

// ParseAlias reads a link alias; ok is false for an alias vxbridge did not
// write.
func ParseAlias(alias string) (o Owner, ok bool) {
	rest, ok := strings.CutPrefix(alias, Prefix)
	if !ok {
		return Owner{}, false
	}
	o.Identity, rest = splitIdentity(rest)
	o.Kind, o.ID, ok = strings.Cut(rest, ":")
	switch {
	case !ok || o.ID == "":
		return Owner{}, false
	case o.Kind == Net || o.Kind == Endpoint || o.Kind == VXLAN || o.Kind == Gateway:
		return o, true
	}
	return Owner{}, false
}

// Comment is the comment of a firewall rule of id (a network's id, or
// "<network>:<endpoint>" for a published port's rules), made from the
// state file of identity.
func Comment(identity, id string) string { return withIdentity(identity) + id }

// ParseComment reads a rule comment (without iptables' quotes); ok is false
// for a comment vxbridge did not write.
func ParseComment(comment string) (identity, id string, ok bool) {
	rest, ok := strings.CutPrefix(comment, Prefix)
	if !ok || rest == "" {
		return "", "", false
	}
	identity, id = splitIdentity(rest)
	return identity, id, true
}

// NetNSPrefix starts the name of every network namespace vxbridge makes.
const NetNSPrefix = "vxbridge-"

// shortID is the part of a docker id a namespace name holds.
func shortID(id string) string { return id[:min(12, len(id))] }

// NetNS is the name of network id's own namespace, made from the state
// file of identity ("": the old form). A namespace cannot be renamed while
// it is mounted, so the name keeps the identity of the state file that
// made it; a record names its namespace, whatever identity that carries.
func NetNS(identity, id string) string {
	if identity == "" {
		return NetNSPrefix + shortID(id)
	}
	return NetNSPrefix + identity + "-" + shortID(id)
}

// ParseNetNS reads a namespace name: the identity it carries ("" for the
// old form) and the start of its network's id. ok is false for a name
// vxbridge did not give.
func ParseNetNS(name string) (identity, short string, ok bool) {
	rest, ok := strings.CutPrefix(name, NetNSPrefix)
	if !ok || rest == "" {
		return "", "", false
	}
	if id, s, cut := strings.Cut(rest, "-"); cut && ValidIdentity(id) && s != "" {
		return id, s, true
	}
	return "", rest, true
}
