package names

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// mapBook is a Book of fixed names.
type mapBook struct {
	names map[string][]netip.Addr // lower case, no final dot
	rev   map[netip.Addr]string
}

func (b mapBook) Lookup(name string) []netip.Addr {
	return b.names[normal(name)]
}

func (b mapBook) Reverse(a netip.Addr) (string, bool) {
	s, ok := b.rev[a]
	return s, ok
}

func normal(s string) string {
	out := []byte(s)
	for i, c := range out {
		if c >= 'A' && c <= 'Z' {
			out[i] = c + 'a' - 'A'
		}
	}
	if n := len(out); n > 0 && out[n-1] == '.' {
		out = out[:n-1]
	}
	return string(out)
}

var (
	web4 = netip.MustParseAddr("10.90.0.5")
	web6 = netip.MustParseAddr("fd90::5")
	web2 = netip.MustParseAddr("10.90.0.6")
	book = mapBook{
		names: map[string][]netip.Addr{"web": {web4, web2, web6}, "web.xnet": {web4, web2, web6}},
		rev:   map[netip.Addr]string{web4: "web.xnet", web2: "web.xnet", web6: "web.xnet"},
	}
)

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

func TestAnswer(t *testing.T) {
	rev6, _ := dns.ReverseAddr(web6.String())
	for _, c := range []struct {
		q    *dns.Msg
		want []string // answer records' data; nil: not answered
	}{
		{query("web.", dns.TypeA), []string{"10.90.0.5", "10.90.0.6"}},
		{query("WeB.xnet.", dns.TypeA), []string{"10.90.0.5", "10.90.0.6"}},
		{query("web.", dns.TypeAAAA), []string{"fd90::5"}},
		{query("web.", dns.TypeMX), []string{}}, // the name is ours: no data, never NXDOMAIN upstream
		{query("5.0.90.10.in-addr.arpa.", dns.TypePTR), []string{"web.xnet."}},
		{query(rev6, dns.TypePTR), []string{"web.xnet."}},
		{query("7.0.90.10.in-addr.arpa.", dns.TypePTR), nil},
		{query("db.", dns.TypeA), nil},
		{query("example.com.", dns.TypeA), nil},
		{query("web.example.com.", dns.TypeA), nil},
	} {
		r := answer(c.q, book)
		if c.want == nil {
			if r != nil {
				t.Errorf("%s %s answered %v, want it passed on", c.q.Question[0].Name, dns.TypeToString[c.q.Question[0].Qtype], r.Answer)
			}
			continue
		}
		if r == nil {
			t.Errorf("%s %s not answered", c.q.Question[0].Name, dns.TypeToString[c.q.Question[0].Qtype])
			continue
		}
		if r.Id != c.q.Id || !r.Response || r.Rcode != dns.RcodeSuccess || r.Question[0] != c.q.Question[0] {
			t.Errorf("reply header %+v does not answer %+v", r.MsgHdr, c.q.MsgHdr)
		}
		var got []string
		for _, rr := range r.Answer {
			switch v := rr.(type) {
			case *dns.A:
				got = append(got, v.A.String())
			case *dns.AAAA:
				got = append(got, v.AAAA.String())
			case *dns.PTR:
				got = append(got, v.Ptr)
			}
			if rr.Header().Name != c.q.Question[0].Name || rr.Header().Ttl != answerTTL {
				t.Errorf("record %v: want the question's name and TTL %d", rr, answerTTL)
			}
		}
		if len(got) != len(c.want) {
			t.Errorf("%s %s = %v, want %v", c.q.Question[0].Name, dns.TypeToString[c.q.Question[0].Qtype], got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s %s = %v, want %v", c.q.Question[0].Name, dns.TypeToString[c.q.Question[0].Qtype], got, c.want)
			}
		}
	}
}

// TestAnswerPassesOnWhatIsNotAQuery: responses, updates, several
// questions, another class, and no book at all go to the upstream.
func TestAnswerPassesOnWhatIsNotAQuery(t *testing.T) {
	resp := query("web.", dns.TypeA)
	resp.Response = true
	update := query("web.", dns.TypeA)
	update.Opcode = dns.OpcodeUpdate
	two := query("web.", dns.TypeA)
	two.Question = append(two.Question, two.Question[0])
	chaos := query("web.", dns.TypeA)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	for _, q := range []*dns.Msg{resp, update, two, chaos} {
		if r := answer(q, book); r != nil {
			t.Errorf("answered %v", q)
		}
	}
	if r := answer(query("web.", dns.TypeA), nil); r != nil {
		t.Error("answered without a book")
	}
}

func TestParseReverse(t *testing.T) {
	for name, want := range map[string]string{
		"5.0.90.10.in-addr.arpa.":  "10.90.0.5",
		"5.0.90.10.IN-ADDR.ARPA":   "10.90.0.5",
		"05.0.90.10.in-addr.arpa":  "",
		"256.0.90.10.in-addr.arpa": "",
		"0.90.10.in-addr.arpa":     "",
		"x.0.90.10.in-addr.arpa":   "",
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.d.f.ip6.arpa.":          "",
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.d.f.ip6.arpa.":  "fd90::1",
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.d.fg.ip6.arpa.": "",
		"1.0.0.ip6.arpa": "",
		"example.com.":   "",
	} {
		got, ok := parseReverse(name)
		if want == "" {
			if ok {
				t.Errorf("parseReverse(%q) = %v, want not a reverse name", name, got)
			}
			continue
		}
		if !ok || got != netip.MustParseAddr(want) {
			t.Errorf("parseReverse(%q) = %v %v, want %s", name, got, ok, want)
		}
	}
}
