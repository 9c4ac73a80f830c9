// Command porttool is the end-to-end tests' TCP and UDP peer, built static
// for the test image (busybox's nc has no UDP) and run on the hosts too.
//
//	porttool serve -name NAME [-tcp PORT]... [-udp PORT]...
//	    answers every TCP connection and UDP datagram, on every address,
//	    with "NAME:PORT SOURCE-ADDRESS" (PORT: where it arrived); with
//	    -check it exits 0 once every port is bound instead
//	porttool ask tcp|udp HOST:PORT [-sport PORT] [-timeout 3s]
//	    prints the answer; exits 1 without one
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: porttool serve|ask ...")
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "ask":
		ask(os.Args[2:])
	default:
		fail("unknown command " + os.Args[1])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "porttool:", msg)
	os.Exit(1)
}

type ports []string

func (p *ports) String() string     { return strings.Join(*p, ",") }
func (p *ports) Set(s string) error { *p = append(*p, s); return nil }

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	name := fs.String("name", "", "name to answer with")
	var tcp, udp ports
	fs.Var(&tcp, "tcp", "TCP port (repeatable)")
	fs.Var(&udp, "udp", "UDP port (repeatable)")
	check := fs.Bool("check", false, "exit once the ports are bound")
	_ = fs.Parse(args)
	for _, p := range tcp {
		l, err := net.Listen("tcp", ":"+p)
		if err != nil {
			fail(err.Error())
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				fmt.Fprintf(c, "%s:%s %s\n", *name, p, host)
				c.Close()
			}
		}()
	}
	for _, p := range udp {
		c, err := net.ListenPacket("udp", ":"+p)
		if err != nil {
			fail(err.Error())
		}
		go func() {
			buf := make([]byte, 512)
			for {
				_, from, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				host, _, _ := net.SplitHostPort(from.String())
				c.WriteTo([]byte(*name+":"+p+" "+host+"\n"), from)
			}
		}()
	}
	fmt.Println("serving")
	if !*check {
		select {}
	}
}

func ask(args []string) {
	if len(args) < 2 {
		fail("usage: porttool ask tcp|udp HOST:PORT [-sport PORT] [-timeout D]")
	}
	proto, addr := args[0], args[1]
	fs := flag.NewFlagSet("ask", flag.ExitOnError)
	sport := fs.Int("sport", 0, "source port")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after")
	_ = fs.Parse(args[2:])
	d := net.Dialer{Timeout: *timeout}
	if *sport != 0 {
		local := ":" + strconv.Itoa(*sport)
		var err error
		if proto == "udp" {
			d.LocalAddr, err = net.ResolveUDPAddr("udp", local)
		} else {
			d.LocalAddr, err = net.ResolveTCPAddr("tcp", local)
		}
		if err != nil {
			fail(err.Error())
		}
	}
	c, err := d.Dial(proto, addr)
	if err != nil {
		fail(err.Error())
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(*timeout))
	if proto == "udp" {
		if _, err := c.Write([]byte("?")); err != nil {
			fail(err.Error())
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fail(fmt.Sprintf("%s %s: %v", proto, addr, err))
	}
	fmt.Print(line)
}
