package names

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// FuzzDecide feeds the server's decision arbitrary datagrams: it never
// panics, and whatever it answers is a well-formed reply to the query,
// within the client's UDP size, naming only the book's addresses.
func FuzzDecide(f *testing.F) {
	for _, q := range []*dns.Msg{query("web.", dns.TypeA), query("web.xnet.", dns.TypeAAAA),
		query("5.0.90.10.in-addr.arpa.", dns.TypePTR), query("example.com.", dns.TypeA)} {
		b, _ := q.Pack()
		f.Add(b)
		q.SetEdns0(4096, true)
		b, _ = q.Pack()
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1}) // a pointer to itself
	s := &Server{dir: fixedDir{book}}
	from := netip.MustParseAddr("10.90.0.20")
	f.Fuzz(func(t *testing.T, raw []byte) {
		out := s.decide(raw, from, true)
		if out == nil {
			return
		}
		q, r := new(dns.Msg), new(dns.Msg)
		if err := q.Unpack(raw); err != nil {
			t.Fatalf("answered a query that does not parse: %v", err)
		}
		if err := r.Unpack(out); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if r.Id != q.Id || !r.Response || len(r.Question) != 1 || r.Question[0] != q.Question[0] {
			t.Fatalf("reply %v does not answer %v", r.MsgHdr, q.MsgHdr)
		}
		if len(out) > udpLimit(q) {
			t.Fatalf("reply of %d bytes to a client taking %d", len(out), udpLimit(q))
		}
		for _, rr := range r.Answer {
			var a netip.Addr
			switch v := rr.(type) {
			case *dns.A:
				a, _ = netip.AddrFromSlice(v.A)
			case *dns.AAAA:
				a, _ = netip.AddrFromSlice(v.AAAA)
			default:
				continue
			}
			if _, ok := book.rev[a.Unmap()]; !ok {
				t.Fatalf("answered %s, not in the book", a)
			}
		}
	})
}
