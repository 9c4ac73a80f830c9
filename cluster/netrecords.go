package cluster

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Records by network. Everything a host needs to program one cross-host
// network lives under that network's own prefix, so a host watches exactly
// the networks it has and hears nothing of the others:
//
//	net/<vni>/members/<host>       member record (JSON: VTEP, port), on the host's lease
//	net/<vni>/eps/<host>/<ep>      endpoint record (JSON), on the host's lease
//
// A member record carries the host's VTEP, so a network's records are
// complete without the host records: an endpoint is programmed once its
// host's member record is known, and goes when it goes. The host's lease
// ties both to its life: when it dies, etcd deletes them in one revision.
//
// Each of them has a copy in its host's own key ranges, written in the same
// transaction (so they cost etcd no extra round), with the same value:
//
//	hosts/<host>                   host record, on the lease
//	endpoints/<host>/<ep>          endpoint record (with its VNI), on the lease
//	memberships/<host>/<vni>       member record, on the lease
//
// A host's own ranges are where etcd can give it, and it alone, the right to
// write (etcd grants by key range; a network's prefix is every member's to
// write). So the copies are what a reader believes: a network's record is
// taken as its host wrote it only when the copy says the same at that
// revision (verify.go); a record no copy backs is refused, a deletion the
// copy contradicts is not believed. endpoints/<host>/ also says, in one
// range, whether a host still has endpoints (an address block is reclaimed
// from a departed host only when it has none), and it is what hosts of the
// version before records by network read.
//
// Memberships were members/<vni>/<host> before: a key per network and
// host is no range of one host's, so it could not be granted to the host
// alone. The cluster-wide claim of a VNI (ClaimNetwork) counts the
// network's member records instead.

func (k keys) netRoot(vni uint32) string { return k.prefix + "/net/" + vniString(vni) + "/" }
func (k keys) netMembers(vni uint32) string {
	return k.netRoot(vni) + "members/"
}
func (k keys) netMember(vni uint32, host string) string { return k.netMembers(vni) + host }
func (k keys) netEndpoints(vni uint32) string           { return k.netRoot(vni) + "eps/" }
func (k keys) netHostEndpoints(vni uint32, host string) string {
	return k.netEndpoints(vni) + host + "/"
}
func (k keys) netEndpoint(vni uint32, host, ep string) string {
	return k.netHostEndpoints(vni, host) + ep
}
func (k keys) memberships(host string) string { return k.prefix + "/memberships/" + host + "/" }
func (k keys) membership(host string, vni uint32) string {
	return k.memberships(host) + vniString(vni)
}

// ownCopy is the key, in the host's own range, of the copy of the network
// record a change of network vni is about.
func (k keys) ownCopy(vni uint32, c Change) string {
	if c.Kind == MemberSet || c.Kind == MemberGone {
		return k.membership(c.Host, vni)
	}
	return k.endpoint(c.Host, c.ID)
}

// Member is a host's membership of one cross-host network, with where its
// frames go.
type Member struct {
	Host string     `json:"host"`
	VTEP netip.Addr `json:"vtep"`
	Port int        `json:"port"`
	// Rev is the etcd revision that created the record (not stored in it).
	Rev int64 `json:"-"`
}

// ChangeKind says what a Change does.
type ChangeKind uint8

// The kinds of Change.
const (
	MemberSet ChangeKind = iota + 1
	MemberGone
	EndpointSet
	EndpointGone
)

func (k ChangeKind) String() string {
	switch k {
	case MemberSet:
		return "member set"
	case MemberGone:
		return "member gone"
	case EndpointSet:
		return "endpoint set"
	case EndpointGone:
		return "endpoint gone"
	}
	return "change(" + strconv.Itoa(int(k)) + ")"
}

// Change is one record of a network created, changed or deleted. Host (and
// ID for endpoints) come from the key; Member or Endpoint hold the record
// for the Set kinds.
type Change struct {
	Kind     ChangeKind
	Host     string
	ID       string // endpoint id; empty for members
	Member   Member
	Endpoint Endpoint
	// Forged, when set, says why the network's record at this key is not
	// what its host wrote (verify.go): the change is then what the host's
	// own copy says, not what the network's record said.
	Forged string
}

// Key is the change's record identity within its network.
func (c Change) Key() string {
	if c.Kind == MemberSet || c.Kind == MemberGone {
		return "m/" + c.Host
	}
	return "e/" + c.Host + "/" + c.ID
}

// NetworkState is everything a listing found of one network.
type NetworkState struct {
	VNI       uint32
	Rev       int64 // the listing's revision
	Members   []Member
	Endpoints []Endpoint
	// Forged lists the network's records that are not what their host
	// wrote, by Change.Key, with why; Members and Endpoints hold what the
	// hosts' own copies say instead.
	Forged map[string]string
}

// decodeNetRecord turns one key of network vni (value nil: deleted) into a
// Change. createRev is the record's creation revision. Keys outside the
// network's layout are an error: the caller logs and skips them. The key,
// not the value, says whose a record is and which network it belongs to.
func (k keys) decodeNetRecord(vni uint32, key string, value []byte, createRev int64) (Change, error) {
	rest, ok := strings.CutPrefix(key, k.netRoot(vni))
	if !ok {
		return Change{}, fmt.Errorf("key %s is not of network %d", key, vni)
	}
	kind, rest, _ := strings.Cut(rest, "/")
	switch kind {
	case "members":
		if !validSegment(rest) {
			return Change{}, fmt.Errorf("member key %s: bad host id", key)
		}
		return decodeMember(key, rest, value, createRev)
	case "eps":
		host, id, _ := strings.Cut(rest, "/")
		if !validSegment(host) || !validSegment(id) {
			return Change{}, fmt.Errorf("endpoint key %s: want eps/<host>/<endpoint>", key)
		}
		return decodeEndpoint(key, vni, host, id, value, createRev)
	}
	return Change{}, fmt.Errorf("key %s: unknown record kind %q", key, kind)
}

func decodeMember(key, host string, value []byte, createRev int64) (Change, error) {
	c := Change{Kind: MemberGone, Host: host}
	if value == nil {
		return c, nil
	}
	var m Member
	if err := json.Unmarshal(value, &m); err != nil {
		return Change{}, fmt.Errorf("member record %s: %w", key, err)
	}
	if m.Host != "" && m.Host != host {
		return Change{}, fmt.Errorf("member record %s: its value is of host %q", key, m.Host)
	}
	m.Host, m.Rev = host, createRev
	c.Kind, c.Member = MemberSet, m
	return c, nil
}

func decodeEndpoint(key string, vni uint32, host, id string, value []byte, createRev int64) (Change, error) {
	c := Change{Kind: EndpointGone, Host: host, ID: id}
	if value == nil {
		return c, nil
	}
	var ep Endpoint
	if err := json.Unmarshal(value, &ep); err != nil {
		return Change{}, fmt.Errorf("endpoint record %s: %w", key, err)
	}
	if ep.Host != "" && ep.Host != host || ep.ID != "" && ep.ID != id || ep.VNI != 0 && ep.VNI != vni {
		return Change{}, fmt.Errorf("endpoint record %s: its value is of host %q, endpoint %q, vni %d", key, ep.Host, ep.ID, ep.VNI)
	}
	ep.ID, ep.Host, ep.VNI, ep.Rev = id, host, vni, createRev
	c.Kind, c.Endpoint = EndpointSet, ep
	return c, nil
}

// validSegment is a non-empty key segment without a slash.
func validSegment(s string) bool { return s != "" && !strings.Contains(s, "/") }
