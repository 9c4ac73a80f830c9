package names

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// answerTTL is the TTL of vxbridge's answers. Short: a stopped container's
// name must stop resolving within a second or two even behind a caching
// resolver in a container (docker's embedded DNS caches nothing).
const answerTTL = 2

// Book is one network's names of other hosts' containers (*peers.Names).
// Its methods take no lock and never wait.
type Book interface {
	Lookup(name string) []netip.Addr
	Reverse(addr netip.Addr) (string, bool)
}

// answer returns the reply to query q from book, or nil when vxbridge does
// not answer it and it goes on to the upstream it was sent to: anything but
// one standard query of class IN for a name (A, AAAA, any type) or an
// address (PTR) book has. A name book has answers every type: A and AAAA
// with its addresses of that family, others with no data, so a client never
// mixes vxbridge's answer with an upstream's NXDOMAIN for the same name.
func answer(q *dns.Msg, book Book) *dns.Msg {
	if book == nil || q.Response || q.Opcode != dns.OpcodeQuery || len(q.Question) != 1 ||
		len(q.Answer) != 0 || len(q.Ns) != 0 {
		return nil
	}
	qq := q.Question[0]
	if qq.Qclass != dns.ClassINET {
		return nil
	}
	var rrs []dns.RR
	if qq.Qtype == dns.TypePTR {
		addr, ok := parseReverse(qq.Name)
		if !ok {
			return nil
		}
		name, ok := book.Reverse(addr)
		if !ok {
			return nil
		}
		rrs = append(rrs, &dns.PTR{Hdr: header(qq), Ptr: dns.Fqdn(name)})
	} else {
		addrs := book.Lookup(qq.Name)
		if len(addrs) == 0 {
			return nil
		}
		rrs = addressRRs(qq, addrs)
	}
	r := new(dns.Msg)
	r.SetReply(q)
	r.RecursionAvailable = true
	r.Answer = rrs
	if opt := q.IsEdns0(); opt != nil {
		r.SetEdns0(ednsSize, false)
	}
	return r
}

// ednsSize is the UDP payload size vxbridge's answers announce: the size
// the DNS flag day of 2020 settled on, which never fragments.
const ednsSize = 1232

func header(q dns.Question) dns.RR_Header {
	return dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: answerTTL}
}

func addressRRs(q dns.Question, addrs []netip.Addr) []dns.RR {
	var rrs []dns.RR
	for _, a := range addrs {
		switch {
		case q.Qtype == dns.TypeA && a.Is4():
			rrs = append(rrs, &dns.A{Hdr: header(q), A: a.AsSlice()})
		case q.Qtype == dns.TypeAAAA && a.Is6():
			rrs = append(rrs, &dns.AAAA{Hdr: header(q), AAAA: a.AsSlice()})
		}
	}
	return rrs
}

// parseReverse turns a reverse name (4.3.2.1.in-addr.arpa., or the 32
// nibbles of ip6.arpa.) into its address; anything else is not one.
func parseReverse(name string) (netip.Addr, bool) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, l := range labels {
			v, err := strconv.ParseUint(l, 10, 8)
			if err != nil || len(l) > 1 && l[0] == '0' {
				return netip.Addr{}, false
			}
			b[3-i] = byte(v)
		}
		return netip.AddrFrom4(b), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, l := range labels {
			v, err := strconv.ParseUint(l, 16, 4)
			if err != nil || len(l) != 1 {
				return netip.Addr{}, false
			}
			b[15-i/2] |= byte(v) << (4 * (i % 2))
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// udpLimit is the largest reply a UDP client of query q takes.
func udpLimit(q *dns.Msg) int {
	if opt := q.IsEdns0(); opt != nil {
		return max(int(opt.UDPSize()), dns.MinMsgSize)
	}
	return dns.MinMsgSize
}
