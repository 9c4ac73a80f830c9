package peers

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/vxlan"
)

var testCfg = config{
	Self: "self", SelfVTEP: netip.MustParseAddr("192.0.2.1"),
	// The underlay: a VTEP outside (198.51.100.7 below) is refused.
	VTEPCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("127.0.0.0/8")},
	Subnets:   []netip.Prefix{netip.MustParsePrefix("10.90.0.0/24"), netip.MustParsePrefix("fd90::/64")},
	Gateways:  []netip.Addr{netip.MustParseAddr("10.90.0.1"), netip.MustParseAddr("fd90::1")},
}

// model is a kernel table deltas are applied to.
type model struct {
	fdb   map[string]netip.Addr
	neigh map[netip.Addr]string
}

func newModel() *model { return &model{fdb: map[string]netip.Addr{}, neigh: map[netip.Addr]string{}} }

func (m *model) apply(t *testing.T, c vxlan.Changes) {
	t.Helper()
	for _, e := range c.DelFDB {
		if _, ok := m.fdb[e.MAC]; !ok {
			t.Fatalf("delta deletes fdb %s that is not there", e.MAC)
		}
		delete(m.fdb, e.MAC)
	}
	for _, e := range c.DelNeigh {
		if _, ok := m.neigh[e.IP]; !ok {
			t.Fatalf("delta deletes neighbour %s that is not there", e.IP)
		}
		delete(m.neigh, e.IP)
	}
	for _, e := range c.SetFDB {
		if m.fdb[e.MAC] == e.Dst {
			t.Fatalf("delta sets fdb %s -> %s that is there already", e.MAC, e.Dst)
		}
		m.fdb[e.MAC] = e.Dst
	}
	for _, e := range c.SetNeigh {
		if m.neigh[e.IP] == e.MAC {
			t.Fatalf("delta sets neighbour %s -> %s that is there already", e.IP, e.MAC)
		}
		m.neigh[e.IP] = e.MAC
	}
}

func (m *model) table() vxlan.Table {
	var out vxlan.Table
	for mac, dst := range m.fdb {
		out.FDB = append(out.FDB, vxlan.FDB{MAC: mac, Dst: dst})
	}
	for ip, mac := range m.neigh {
		out.Neigh = append(out.Neigh, vxlan.Neigh{IP: ip, MAC: mac})
	}
	slices.SortFunc(out.FDB, func(a, b vxlan.FDB) int { return cmp.Compare(a.MAC, b.MAC) })
	slices.SortFunc(out.Neigh, func(a, b vxlan.Neigh) int { return a.IP.Compare(b.IP) })
	return out
}

// world is the records a test made, and reference computes their table
// the slow, obvious way: it shares no code with table's indexes.
type world struct {
	members  map[string]cluster.Member
	eps      map[string]cluster.Endpoint
	local    []netip.Addr
	localMAC []string
}

func (w *world) reference(c config) vxlan.Table {
	type cand struct {
		key string
		ep  cluster.Endpoint
		mac string
	}
	var cands []cand
	for key, ep := range w.eps {
		m, ok := w.members[ep.Host]
		hw, err := net.ParseMAC(ep.MAC)
		v := m.VTEP.Unmap()
		if !ok || ep.Host == c.Self || err != nil || len(hw) != 6 || hw[0]&1 == 1 || hw.String() == "00:00:00:00:00:00" ||
			slices.Contains(w.localMAC, hw.String()) || !v.IsValid() || v.IsLoopback() || v.IsUnspecified() ||
			v.IsMulticast() || v.IsLinkLocalUnicast() || v == c.SelfVTEP || !slices.ContainsFunc(c.VTEPCIDRs, func(p netip.Prefix) bool { return p.Contains(v) }) {
			continue
		}
		cands = append(cands, cand{key, ep, hw.String()})
	}
	older := func(a, b cand) bool { return a.ep.Rev < b.ep.Rev || a.ep.Rev == b.ep.Rev && a.key < b.key }
	macOwner := map[string]cand{}
	for _, x := range cands {
		if o, ok := macOwner[x.mac]; !ok || older(x, o) {
			macOwner[x.mac] = x
		}
	}
	ipOwner := map[netip.Addr]cand{}
	for _, x := range cands {
		for _, ip := range []netip.Addr{x.ep.IPv4.Unmap(), x.ep.IPv6.Unmap()} {
			in := false
			for _, p := range c.Subnets {
				in = in || p.Contains(ip) && ip != p.Masked().Addr()
			}
			if !ip.IsValid() || !in || slices.Contains(c.Gateways, ip) || slices.Contains(w.local, ip) {
				continue
			}
			if o, ok := ipOwner[ip]; !ok || older(x, o) {
				ipOwner[ip] = x
			}
		}
	}
	m := newModel()
	for mac, o := range macOwner {
		// Only an owner that holds one of its addresses gets its MAC.
		for _, ip := range []netip.Addr{o.ep.IPv4.Unmap(), o.ep.IPv6.Unmap()} {
			if h, ok := ipOwner[ip]; ok && h.key == o.key {
				m.fdb[mac] = w.members[o.ep.Host].VTEP.Unmap()
			}
		}
	}
	for ip, o := range ipOwner {
		if macOwner[o.mac].key == o.key {
			m.neigh[ip] = o.mac
		}
	}
	return m.table()
}

// TestDeltaEqualsFullSync applies random changes one by one and checks,
// after each, that the deltas applied so far leave the kernel exactly as a
// full computation of the same records would (and that no delta sets what
// is there or deletes what is not).
func TestDeltaEqualsFullSync(t *testing.T) {
	for seed := range uint64(200) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runRandom(t, seed, 300) })
	}
}

func runRandom(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	tb := newTable(testCfg)
	k := newModel()
	w := &world{members: map[string]cluster.Member{}, eps: map[string]cluster.Endpoint{}}
	hosts := []string{"self", "h1", "h2", "h3", "h4"}
	vteps := []string{"192.0.2.11", "192.0.2.12", "192.0.2.13", "127.0.0.1", "192.0.2.1", "fe80::1", "0.0.0.0", "198.51.100.7"}
	macs := []string{"76:78:0a:5a:00:05", "76:78:0a:5a:00:06", "76:78:0a:5a:00:07", "00:00:00:00:00:01", "01:00:5e:00:00:01", "bad"}
	ips := []string{"10.90.0.5", "10.90.0.6", "10.90.0.1", "10.91.0.5", "10.90.0.0", ""}
	ip6s := []string{"fd90::5", "fd90::1", "fd91::5", ""}
	rev := int64(0)
	for step := range steps {
		rev++
		host := hosts[rng.IntN(len(hosts))]
		var d vxlan.Changes
		switch rng.IntN(10) {
		case 0, 1:
			m := cluster.Member{Host: host, VTEP: netip.MustParseAddr(vteps[rng.IntN(len(vteps))]), Port: 4789, Rev: rev}
			w.members[host] = m
			d = tb.apply(cluster.Change{Kind: cluster.MemberSet, Host: host, Member: m})
		case 2:
			delete(w.members, host)
			d = tb.apply(cluster.Change{Kind: cluster.MemberGone, Host: host})
		case 3, 4, 5, 6:
			id := fmt.Sprint("ep", rng.IntN(6))
			key := host + "/" + id
			ep := cluster.Endpoint{ID: id, Host: host, VNI: 9, MAC: macs[rng.IntN(len(macs))], Rev: rev}
			if old, ok := w.eps[key]; ok {
				ep.Rev = old.Rev // an update keeps the record's creation revision
			}
			if s := ips[rng.IntN(len(ips))]; s != "" {
				ep.IPv4 = netip.MustParseAddr(s)
			}
			if s := ip6s[rng.IntN(len(ip6s))]; s != "" {
				ep.IPv6 = netip.MustParseAddr(s)
			}
			w.eps[key] = ep
			d = tb.apply(cluster.Change{Kind: cluster.EndpointSet, Host: host, ID: id, Endpoint: ep})
		case 7, 8:
			id := fmt.Sprint("ep", rng.IntN(6))
			delete(w.eps, host+"/"+id)
			d = tb.apply(cluster.Change{Kind: cluster.EndpointGone, Host: host, ID: id})
		case 9:
			w.local, w.localMAC = nil, nil
			if rng.IntN(2) == 0 {
				w.local = append(w.local, netip.MustParseAddr(ips[rng.IntN(2)]))
			}
			if rng.IntN(2) == 0 {
				w.localMAC = append(w.localMAC, macs[rng.IntN(3)])
			}
			d = tb.setLocal(w.local, w.localMAC)
		}
		k.apply(t, d)
		want := w.reference(testCfg)
		if got := k.table(); !equalTables(got, want) {
			t.Fatalf("step %d: kernel after deltas\n%+v\nfull computation\n%+v", step, got, want)
		}
		if got := tb.desired(); !equalTables(got, want) {
			t.Fatalf("step %d: table's desired\n%+v\nfull computation\n%+v", step, got, want)
		}
		if tb.nFDB != len(want.FDB) || tb.nNeigh != len(want.Neigh) {
			t.Fatalf("step %d: counts %d fdb %d neigh, want %d and %d", step, tb.nFDB, tb.nNeigh, len(want.FDB), len(want.Neigh))
		}
		if got, want := tb.conflicts(), fullConflicts(tb); !slices.Equal(got, want) {
			t.Fatalf("step %d: conflicts kept by deltas\n%+v\nrecomputed\n%+v", step, got, want)
		}
	}
	// A listing of the same records changes nothing.
	st := cluster.NetworkState{}
	for _, m := range w.members {
		st.Members = append(st.Members, m)
	}
	for _, ep := range w.eps {
		st.Endpoints = append(st.Endpoints, ep)
	}
	if d := tb.reset(st); !d.Empty() {
		t.Fatalf("reset with the same records changed %+v", d)
	}
}

func equalTables(a, b vxlan.Table) bool {
	return slices.Equal(a.FDB, b.FDB) && slices.Equal(a.Neigh, b.Neigh)
}

// fullConflicts recomputes every conflict of tb from scratch.
func fullConflicts(tb *table) []Conflict {
	saved := tb.conf
	tb.conf = map[string][]Conflict{}
	tb.refreshConflicts(tb.allScope())
	out := tb.conflicts()
	tb.conf = saved
	return out
}
