package peers

import (
	"cmp"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/vxlan"
)

// table is what this host knows of one cross-host network's remote records,
// and the VXLAN entries they ask for. It is pure: a change goes in, the
// entries it adds, replaces and removes come out (a delta), and the same
// records always ask for the same entries, whatever order they came in.
//
// The rules every record passes before it reaches the kernel:
//   - an endpoint counts only while its host is a member of the network with
//     a usable VTEP (unicast, not loopback, link-local or this host's own,
//     and inside the underlay's prefixes when they are given);
//   - its MAC is a unicast Ethernet address no local endpoint has;
//   - each of its addresses lies in the network's subnets and is neither a
//     gateway nor an address of this host's own endpoints;
//   - a MAC or an address two records claim belongs to the older record (the
//     lower etcd creation revision), never decided silently: the loser is a
//     conflict, counted and listed;
//   - an address is programmed only when its owner also owns its MAC (its
//     neighbour entry would otherwise send frames to another host).
type table struct {
	self      string
	selfVTEP  netip.Addr
	vtepCIDRs []netip.Prefix // empty: any
	subnets   []netip.Prefix
	gateways  map[netip.Addr]bool
	local     map[netip.Addr]bool // this host's endpoint addresses
	localMAC  map[string]bool

	members map[string]cluster.Member
	recs    map[string]*rec   // by "<host>/<id>"
	byHost  map[string][]*rec // records of each host
	byMAC   map[string][]*rec // claimants of each MAC, oldest first
	byIP    map[netip.Addr][]*rec

	nFDB, nNeigh int                   // entries the records ask for
	conf         map[string][]Conflict // claims lost, by "mac <mac>" or "ip <addr>"
	newConf      []Conflict            // conflicts the last change made, to log
	// gen counts the changes of members and conflicts, so a status copy
	// is made again only when it would differ; ngen counts the changes of
	// records and local endpoints, which with gen say when the names
	// snapshot is stale.
	gen, ngen uint64
	// onMAC, if set, hears every record's MAC come (+1) and go (-1).
	onMAC func(mac string, delta int)
}

type rec struct {
	key string // "<host>/<id>"
	ep  cluster.Endpoint
	mac string // canonical form; "" when unusable
	ips []netip.Addr
}

// entries are the entries of some MACs and addresses.
type entries struct {
	fdb   map[string]netip.Addr
	neigh map[netip.Addr]string
}

// config is what the table checks records against.
type config struct {
	Self      string
	SelfVTEP  netip.Addr
	VTEPCIDRs []netip.Prefix
	Subnets   []netip.Prefix
	Gateways  []netip.Addr
}

func newTable(c config) *table {
	t := &table{self: c.Self, selfVTEP: c.SelfVTEP, vtepCIDRs: slices.Clone(c.VTEPCIDRs), subnets: slices.Clone(c.Subnets), gateways: map[netip.Addr]bool{},
		local: map[netip.Addr]bool{}, localMAC: map[string]bool{}}
	for _, g := range c.Gateways {
		t.gateways[g.Unmap()] = true
	}
	t.clear()
	return t
}

func (t *table) clear() {
	for _, r := range t.recs {
		if t.onMAC != nil && r.mac != "" && r.ep.Host != t.self {
			t.onMAC(r.mac, -1)
		}
	}
	t.members = map[string]cluster.Member{}
	t.recs = map[string]*rec{}
	t.byHost = map[string][]*rec{}
	t.byMAC = map[string][]*rec{}
	t.byIP = map[netip.Addr][]*rec{}
	t.nFDB, t.nNeigh = 0, 0
	t.conf = map[string][]Conflict{}
	t.gen++
}

// usableVTEP says whether frames may be sent to v.
func (t *table) usableVTEP(v netip.Addr) bool {
	v = v.Unmap()
	return v.IsValid() && !v.IsUnspecified() && !v.IsLoopback() && !v.IsMulticast() &&
		!v.IsLinkLocalUnicast() && !v.IsLinkLocalMulticast() && v != t.selfVTEP.Unmap() &&
		(len(t.vtepCIDRs) == 0 || slices.ContainsFunc(t.vtepCIDRs, func(p netip.Prefix) bool { return p.Contains(v) }))
}

// newRec checks an endpoint record's own fields (the rules that do not
// depend on other records).
func (t *table) newRec(ep cluster.Endpoint) *rec {
	r := &rec{key: ep.Host + "/" + ep.ID, ep: ep}
	if mac, err := net.ParseMAC(ep.MAC); err == nil && len(mac) == 6 && mac[0]&1 == 0 && !isZero(mac) {
		r.mac = mac.String()
	}
	for _, ip := range []netip.Addr{ep.IPv4, ep.IPv6} {
		if ip = ip.Unmap(); t.validIP(ip) && !slices.Contains(r.ips, ip) {
			r.ips = append(r.ips, ip)
		}
	}
	return r
}

func isZero(mac net.HardwareAddr) bool {
	return !slices.ContainsFunc(mac, func(b byte) bool { return b != 0 })
}

func (t *table) validIP(ip netip.Addr) bool {
	if !ip.IsValid() || t.gateways[ip] {
		return false
	}
	return slices.ContainsFunc(t.subnets, func(p netip.Prefix) bool {
		return p.Contains(ip) && ip != p.Masked().Addr()
	})
}

// eligible says whether r may hold anything: a record of a live member
// host (not this one) with a usable VTEP and a MAC of its own to use.
func (t *table) eligible(r *rec) bool {
	if r.mac == "" || r.ep.Host == t.self || t.localMAC[r.mac] {
		return false
	}
	m, ok := t.members[r.ep.Host]
	return ok && t.usableVTEP(m.VTEP)
}

// owner is the oldest eligible claimant of a list.
func (t *table) owner(claims []*rec) *rec {
	for _, r := range claims {
		if t.eligible(r) {
			return r
		}
	}
	return nil
}

func (t *table) ipOwner(ip netip.Addr) *rec {
	if t.local[ip] {
		return nil
	}
	return t.owner(t.byIP[ip])
}

// entriesFor computes the entries of the given MACs and addresses. A MAC
// is programmed only for an owner that holds at least one of its
// addresses: a record whose every address an older claim (or this host)
// holds reaches nothing, and its MAC would only point frames at a host
// that claimed what is not its own.
func (t *table) entriesFor(macs map[string]bool, ips map[netip.Addr]bool) entries {
	e := entries{fdb: map[string]netip.Addr{}, neigh: map[netip.Addr]string{}}
	for mac := range macs {
		if o := t.owner(t.byMAC[mac]); o != nil && t.holdsAddress(o) {
			e.fdb[mac] = t.members[o.ep.Host].VTEP.Unmap()
		}
	}
	for ip := range ips {
		if o := t.ipOwner(ip); o != nil && t.owner(t.byMAC[o.mac]) == o {
			e.neigh[ip] = o.mac
		}
	}
	return e
}

// holdsAddress says whether r owns one of its addresses.
func (t *table) holdsAddress(r *rec) bool {
	return slices.ContainsFunc(r.ips, func(ip netip.Addr) bool { return t.ipOwner(ip) == r })
}

// scope is the MACs and addresses a change can touch.
type scope struct {
	macs map[string]bool
	ips  map[netip.Addr]bool
}

func newScope() scope { return scope{macs: map[string]bool{}, ips: map[netip.Addr]bool{}} }

// addRec adds what r's fields touch: its MAC, its addresses, the MACs of
// every record claiming one of them (whether their FDB entry stays depends
// on who owns the address), and the addresses of every record claiming its
// MAC (their neighbour entries depend on who owns it).
func (t *table) addRec(s scope, r *rec) {
	for _, ip := range r.ips {
		s.ips[ip] = true
		for _, c := range t.byIP[ip] {
			if c.mac != "" {
				s.macs[c.mac] = true
			}
		}
	}
	if r.mac == "" {
		return
	}
	s.macs[r.mac] = true
	for _, o := range t.byMAC[r.mac] {
		for _, ip := range o.ips {
			s.ips[ip] = true
		}
	}
}

// addIP adds an address and the MACs of its claimants (their ownership
// decides whether it is programmed).
func (t *table) addIP(s scope, ip netip.Addr) {
	s.ips[ip] = true
	for _, r := range t.byIP[ip] {
		t.addRec(s, r)
	}
}

// delta runs change, returning the entries it sets and deletes: the
// entries of its scope after, against before. The scope, taken before the
// change, must hold every MAC and address whose entry the change can alter.
func (t *table) delta(s func(scope), change func()) vxlan.Changes {
	sc := newScope()
	s(sc)
	before := t.entriesFor(sc.macs, sc.ips)
	change()
	after := t.entriesFor(sc.macs, sc.ips)
	t.nFDB += len(after.fdb) - len(before.fdb)
	t.nNeigh += len(after.neigh) - len(before.neigh)
	t.refreshConflicts(sc)
	return diffEntries(before, after)
}

// refreshConflicts recomputes the conflicts of a scope's MACs and
// addresses, noting the new ones.
func (t *table) refreshConflicts(sc scope) {
	t.newConf = t.newConf[:0]
	note := func(key string, now []Conflict) {
		for _, c := range now {
			if !slices.Contains(t.conf[key], c) {
				t.newConf = append(t.newConf, c)
			}
		}
		if len(now) == 0 && len(t.conf[key]) > 0 {
			delete(t.conf, key)
			t.gen++
		} else if len(now) > 0 && !slices.Equal(now, t.conf[key]) {
			t.conf[key] = now
			t.gen++
		}
	}
	for mac := range sc.macs {
		note("mac "+mac, t.losers(t.byMAC[mac], "mac", mac, false))
	}
	for ip := range sc.ips {
		note("ip "+ip.String(), t.losers(t.byIP[ip], "address", ip.String(), t.local[ip]))
	}
}

func diffEntries(before, after entries) vxlan.Changes {
	var c vxlan.Changes
	for mac, dst := range after.fdb {
		if old, ok := before.fdb[mac]; !ok || old != dst {
			c.SetFDB = append(c.SetFDB, vxlan.FDB{MAC: mac, Dst: dst})
		}
	}
	for mac, dst := range before.fdb {
		if _, ok := after.fdb[mac]; !ok {
			c.DelFDB = append(c.DelFDB, vxlan.FDB{MAC: mac, Dst: dst})
		}
	}
	for ip, mac := range after.neigh {
		if old, ok := before.neigh[ip]; !ok || old != mac {
			c.SetNeigh = append(c.SetNeigh, vxlan.Neigh{IP: ip, MAC: mac})
		}
	}
	for ip, mac := range before.neigh {
		if _, ok := after.neigh[ip]; !ok {
			c.DelNeigh = append(c.DelNeigh, vxlan.Neigh{IP: ip, MAC: mac})
		}
	}
	sortChanges(&c)
	return c
}

func sortChanges(c *vxlan.Changes) {
	byFDB := func(a, b vxlan.FDB) int { return cmp.Compare(a.MAC, b.MAC) }
	byNeigh := func(a, b vxlan.Neigh) int { return a.IP.Compare(b.IP) }
	slices.SortFunc(c.SetFDB, byFDB)
	slices.SortFunc(c.DelFDB, byFDB)
	slices.SortFunc(c.SetNeigh, byNeigh)
	slices.SortFunc(c.DelNeigh, byNeigh)
}

// apply folds one change in and returns its delta.
func (t *table) apply(ch cluster.Change) vxlan.Changes {
	switch ch.Kind {
	case cluster.MemberSet, cluster.MemberGone:
		return t.delta(func(s scope) {
			for _, r := range t.byHost[ch.Host] {
				t.addRec(s, r)
			}
		}, func() {
			if ch.Kind == cluster.MemberSet {
				t.members[ch.Host] = ch.Member
			} else {
				delete(t.members, ch.Host)
			}
			t.gen++
		})
	case cluster.EndpointSet, cluster.EndpointGone:
		key := ch.Host + "/" + ch.ID
		var next *rec
		if ch.Kind == cluster.EndpointSet {
			next = t.newRec(ch.Endpoint)
		}
		return t.delta(func(s scope) {
			if old := t.recs[key]; old != nil {
				t.addRec(s, old)
			}
			if next != nil {
				t.addRec(s, next)
			}
		}, func() {
			t.remove(key)
			if next != nil {
				t.insert(next)
			}
		})
	}
	return vxlan.Changes{}
}

// setLocal replaces this host's own endpoint addresses and MACs.
func (t *table) setLocal(ips []netip.Addr, macs []string) vxlan.Changes {
	nextIP := map[netip.Addr]bool{}
	for _, ip := range ips {
		nextIP[ip.Unmap()] = true
	}
	nextMAC := map[string]bool{}
	for _, m := range macs {
		if hw, err := net.ParseMAC(m); err == nil {
			nextMAC[hw.String()] = true
		}
	}
	return t.delta(func(s scope) {
		for ip := range mergeKeys(t.local, nextIP) {
			t.addIP(s, ip)
		}
		for mac := range mergeKeys(t.localMAC, nextMAC) {
			for _, r := range t.byMAC[mac] {
				t.addRec(s, r)
			}
		}
	}, func() { t.local, t.localMAC, t.ngen = nextIP, nextMAC, t.ngen+1 })
}

func mergeKeys[K comparable](a, b map[K]bool) map[K]bool {
	out := make(map[K]bool, len(a)+len(b))
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func recOrder(a, b *rec) int {
	return cmp.Or(cmp.Compare(a.ep.Rev, b.ep.Rev), strings.Compare(a.key, b.key))
}

func (t *table) insert(r *rec) {
	t.ngen++
	t.recs[r.key] = r
	if t.onMAC != nil && r.mac != "" && r.ep.Host != t.self {
		t.onMAC(r.mac, 1)
	}
	t.byHost[r.ep.Host] = append(t.byHost[r.ep.Host], r)
	if r.mac != "" {
		t.byMAC[r.mac] = insertSorted(t.byMAC[r.mac], r)
	}
	for _, ip := range r.ips {
		t.byIP[ip] = insertSorted(t.byIP[ip], r)
	}
}

func insertSorted(list []*rec, r *rec) []*rec {
	i, _ := slices.BinarySearchFunc(list, r, recOrder)
	return slices.Insert(list, i, r)
}

func (t *table) remove(key string) {
	r := t.recs[key]
	if r == nil {
		return
	}
	delete(t.recs, key)
	t.ngen++
	if t.onMAC != nil && r.mac != "" && r.ep.Host != t.self {
		t.onMAC(r.mac, -1)
	}
	t.byHost[r.ep.Host] = without(t.byHost[r.ep.Host], r)
	if len(t.byHost[r.ep.Host]) == 0 {
		delete(t.byHost, r.ep.Host)
	}
	if r.mac != "" {
		if t.byMAC[r.mac] = without(t.byMAC[r.mac], r); len(t.byMAC[r.mac]) == 0 {
			delete(t.byMAC, r.mac)
		}
	}
	for _, ip := range r.ips {
		if t.byIP[ip] = without(t.byIP[ip], r); len(t.byIP[ip]) == 0 {
			delete(t.byIP, ip)
		}
	}
}

func without(list []*rec, r *rec) []*rec {
	return slices.DeleteFunc(list, func(o *rec) bool { return o == r })
}

// reset replaces every record with a listing's and returns the delta.
func (t *table) reset(st cluster.NetworkState) vxlan.Changes {
	before, known := t.all(), t.conf
	t.clear()
	for _, m := range st.Members {
		t.members[m.Host] = m
	}
	for _, ep := range st.Endpoints {
		r := t.newRec(ep)
		t.remove(r.key)
		t.insert(r)
	}
	after := t.all()
	t.nFDB, t.nNeigh = len(after.fdb), len(after.neigh)
	t.refreshConflicts(t.allScope())
	t.newConf = slices.DeleteFunc(t.newConf, func(c Conflict) bool {
		for _, cs := range known {
			if slices.Contains(cs, c) {
				return true
			}
		}
		return false
	})
	return diffEntries(before, after)
}

// all is every entry the records ask for.
func (t *table) all() entries {
	sc := t.allScope()
	return t.entriesFor(sc.macs, sc.ips)
}

func (t *table) allScope() scope {
	sc := scope{macs: make(map[string]bool, len(t.byMAC)), ips: make(map[netip.Addr]bool, len(t.byIP))}
	for mac := range t.byMAC {
		sc.macs[mac] = true
	}
	for ip := range t.byIP {
		sc.ips[ip] = true
	}
	return sc
}

// desired is all as a sorted vxlan.Table.
func (t *table) desired() vxlan.Table {
	e := t.all()
	var out vxlan.Table
	for mac, dst := range e.fdb {
		out.FDB = append(out.FDB, vxlan.FDB{MAC: mac, Dst: dst})
	}
	for ip, mac := range e.neigh {
		out.Neigh = append(out.Neigh, vxlan.Neigh{IP: ip, MAC: mac})
	}
	slices.SortFunc(out.FDB, func(a, b vxlan.FDB) int { return cmp.Compare(a.MAC, b.MAC) })
	slices.SortFunc(out.Neigh, func(a, b vxlan.Neigh) int { return a.IP.Compare(b.IP) })
	return out
}

// Conflict is a record that lost a MAC or an address to an older one.
type Conflict struct {
	Endpoint string // "<host>/<endpoint id>" of the loser
	What     string // "mac" or "address"
	Value    string // the MAC or address
	Holder   string // "<host>/<endpoint id>" that keeps it
}

// conflicts lists every claim lost to an older record, sorted.
func (t *table) conflicts() []Conflict {
	var out []Conflict
	for _, cs := range t.conf {
		out = append(out, cs...)
	}
	slices.SortFunc(out, func(a, b Conflict) int {
		return cmp.Or(strings.Compare(a.Value, b.Value), strings.Compare(a.Endpoint, b.Endpoint))
	})
	return out
}

// losers are the eligible claimants that do not hold value: all of them
// when this host holds it itself.
func (t *table) losers(claims []*rec, what, value string, mine bool) []Conflict {
	var out []Conflict
	o, holder := t.owner(claims), t.self+" (this host)"
	if !mine && o != nil {
		holder = o.key
	}
	for _, r := range claims {
		if (mine || r != o) && t.eligible(r) {
			out = append(out, Conflict{Endpoint: r.key, What: what, Value: value, Holder: holder})
		}
	}
	return out
}

// peers lists the other member hosts, sorted.
func (t *table) peers() []Peer {
	out := make([]Peer, 0, len(t.members))
	for host, m := range t.members {
		if host != t.self {
			out = append(out, Peer{Host: host, VTEP: m.VTEP, Usable: t.usableVTEP(m.VTEP)})
		}
	}
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.Host, b.Host) })
	return out
}

// lookupIP is what a peer asks of the kernel to reach address ip, the way a
// full computation would program it: its neighbour entry and its MAC's FDB
// entry (ok false: no record may have it).
func (t *table) lookupIP(ip netip.Addr) (n vxlan.Neigh, f vxlan.FDB, ok bool) {
	e := t.entriesFor(map[string]bool{}, map[netip.Addr]bool{ip.Unmap(): true})
	mac, ok := e.neigh[ip.Unmap()]
	if !ok {
		return n, f, false
	}
	f, ok = t.lookupMAC(mac)
	return vxlan.Neigh{IP: ip.Unmap(), MAC: mac}, f, ok
}

// lookupMAC is the FDB entry of mac, if a record owns it.
func (t *table) lookupMAC(mac string) (vxlan.FDB, bool) {
	e := t.entriesFor(map[string]bool{mac: true}, map[netip.Addr]bool{})
	dst, ok := e.fdb[mac]
	return vxlan.FDB{MAC: mac, Dst: dst}, ok
}
