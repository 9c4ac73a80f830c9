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
// Beside them, in this host's own key ranges, as before the records moved
// by network (and read by hosts of that version):
//
//	hosts/<host>                   host record, on the lease
//	endpoints/<host>/<ep>          endpoint record (with its VNI), on the lease
//	members/<vni>/<host>           "1", on the lease
//
// They are written in the same transactions as the network's records, so
// they cost etcd no extra round. members/ is what the cluster-wide claim of
// a VNI (ClaimNetwork) counts; endpoints/<host>/ says, in one range, whether
// a host still has endpoints (an address block is reclaimed from a departed
// host only when it has none); and a host's own ranges are where it can be
// given the right to write (etcd grants by key range).

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
	ep.ID, ep.Host, ep.VNI, ep.Rev = id, host, vni, createRev
	c.Kind, c.Endpoint = EndpointSet, ep
	return c, nil
}

// validSegment is a non-empty key segment without a slash.
func validSegment(s string) bool { return s != "" && !strings.Contains(s, "/") }
