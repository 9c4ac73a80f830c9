// Command dnstool is the end-to-end tests' DNS peer, built static for the
// test image and run in the "internet" namespace as the containers'
// upstream resolver.
//
//	dnstool serve -listen ADDR:PORT [-answer NAME=ADDR]... [-quiet]
//	    answers A queries for the given names (UDP and TCP), NXDOMAIN for
//	    the rest, and prints "QTYPE NAME SOURCE-ADDRESS PROTO" per query
//	dnstool ask [-tcp] [-type A|AAAA|PTR] [-timeout 3s] [-until D] [-want DATA] SERVER:PORT NAME
//	    prints the answers' data, one a line; exits 1 without an answer,
//	    2 on NXDOMAIN or no records (or none equal to -want). With -until it
//	    asks again every 5 ms until it gets one (or, with -gone, until it
//	    gets none) for at most D, then prints "at UNIXNANO" last
//	dnstool flood -for D SERVER:PORT NAME
//	    sends A queries as fast as it can for D, without waiting for the
//	    answers, and prints how many it sent
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: dnstool serve|ask ...")
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "ask":
		ask(os.Args[2:])
	case "flood":
		flood(os.Args[2:])
	default:
		fail("unknown command " + os.Args[1])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "dnstool:", msg)
	os.Exit(1)
}

type answers map[string]string

func (a answers) String() string { return fmt.Sprint(map[string]string(a)) }
func (a answers) Set(s string) error {
	name, addr, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("want NAME=ADDR")
	}
	a[dns.Fqdn(strings.ToLower(name))] = addr
	return nil
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "", "address:port to answer on")
	quiet := fs.Bool("quiet", false, "print nothing per query")
	ans := answers{}
	fs.Var(ans, "answer", "NAME=ADDR (repeatable)")
	_ = fs.Parse(args)
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		qq := q.Question[0]
		if !*quiet {
			fmt.Printf("%s %s %s %s\n", dns.TypeToString[qq.Qtype], qq.Name, w.RemoteAddr(), w.RemoteAddr().Network())
		}
		if addr, ok := ans[strings.ToLower(qq.Name)]; ok {
			if qq.Qtype == dns.TypeA {
				r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A: net.ParseIP(addr)})
			}
		} else {
			r.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(r)
	})
	errc := make(chan error, 2)
	for _, proto := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: *listen, Net: proto, Handler: h}
		go func() { errc <- srv.ListenAndServe() }()
	}
	fail((<-errc).Error())
}

func ask(args []string) {
	fs := flag.NewFlagSet("ask", flag.ExitOnError)
	tcp := fs.Bool("tcp", false, "ask over TCP")
	qtype := fs.String("type", "A", "A, AAAA or PTR")
	timeout := fs.Duration("timeout", 3*time.Second, "wait for the answer")
	until := fs.Duration("until", 0, "ask again until answered, for at most this long")
	gone := fs.Bool("gone", false, "with -until: until no answer")
	want := fs.String("want", "", "an answer counts only with this record data")
	_ = fs.Parse(args)
	if fs.NArg() != 2 {
		fail("usage: dnstool ask [-tcp] [-type T] SERVER:PORT NAME")
	}
	c := &dns.Client{Net: "udp", Timeout: *timeout}
	if *tcp {
		c.Net = "tcp"
	}
	q := question(fs.Arg(1), *qtype)
	deadline := time.Now().Add(*until)
	for {
		data, code := exchange(c, q, fs.Arg(0), *want)
		if *until == 0 {
			fmt.Print(data)
			os.Exit(code)
		}
		if (code == 0) != *gone {
			fmt.Printf("%sat %d\n", data, time.Now().UnixNano())
			os.Exit(0)
		}
		if time.Now().After(deadline) {
			fmt.Print(data)
			os.Exit(code)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func question(name, qtype string) *dns.Msg {
	t, ok := dns.StringToType[strings.ToUpper(qtype)]
	if !ok {
		fail("unknown type " + qtype)
	}
	if t == dns.TypePTR {
		if rev, err := dns.ReverseAddr(name); err == nil {
			name = rev
		}
	}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), t)
	return q
}

// exchange returns the answers' data and the exit code ask gives them.
func exchange(c *dns.Client, q *dns.Msg, server, want string) (string, int) {
	q.Id = dns.Id()
	r, _, err := c.Exchange(q, server)
	if err != nil {
		return err.Error() + "\n", 1
	}
	var b strings.Builder
	found := false
	for _, rr := range r.Answer {
		var data string
		switch v := rr.(type) {
		case *dns.A:
			data = v.A.String()
		case *dns.AAAA:
			data = v.AAAA.String()
		case *dns.PTR:
			data = v.Ptr
		default:
			continue
		}
		found = found || want == "" || data == want
		b.WriteString(data + "\n")
	}
	if r.Rcode != dns.RcodeSuccess || !found {
		return dns.RcodeToString[r.Rcode] + "\n" + b.String(), 2
	}
	return b.String(), 0
}

func flood(args []string) {
	fs := flag.NewFlagSet("flood", flag.ExitOnError)
	d := fs.Duration("for", 10*time.Second, "how long")
	_ = fs.Parse(args)
	if fs.NArg() != 2 {
		fail("usage: dnstool flood -for D SERVER:PORT NAME")
	}
	conn, err := net.Dial("udp", fs.Arg(0))
	if err != nil {
		fail(err.Error())
	}
	go func() { // drain the answers
		buf := make([]byte, 65535)
		for {
			if _, err := conn.Read(buf); err != nil && !isRefused(err) {
				return
			}
		}
	}()
	q := question(fs.Arg(1), "A")
	sent := 0
	for end := time.Now().Add(*d); time.Now().Before(end); sent++ {
		q.Id = dns.Id()
		b, _ := q.Pack()
		_, _ = conn.Write(b)
	}
	fmt.Println("sent", sent)
}

func isRefused(err error) bool { return strings.Contains(err.Error(), "refused") }
