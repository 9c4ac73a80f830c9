// Command delayrelay is the end-to-end tests' slow link: a TCP relay that
// holds every chunk it forwards for a delay with jitter, in both directions,
// keeping each direction's byte order. The fault tests put it between the
// hosts and etcd because the test kernel has no sch_netem.
//
//	delayrelay -listen ADDR -to ADDR -delay 100ms -jitter 50ms [-slow=false]
//
// SIGUSR1 turns the delay on, SIGUSR2 off (-slow=false: off at start), so
// a test can slow the link under live connections.
//
// Each chunk leaves at max(previous chunk's time, arrival + delay ±
// jitter): jitter spreads the latency without reordering a stream, as netem
// does for one TCP flow.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "", "address to listen on")
	to := flag.String("to", "", "address to relay to")
	delay := flag.Duration("delay", 100*time.Millisecond, "one-way delay")
	jitter := flag.Duration("jitter", 0, "delay varies uniformly by ± this")
	slowAtStart := flag.Bool("slow", true, "delay from the start (else from SIGUSR1 on)")
	flag.Parse()
	if *listen == "" || *to == "" || *jitter > *delay {
		fmt.Fprintln(os.Stderr, "delayrelay: need -listen and -to, and -jitter at most -delay")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "delayrelay:", err)
		os.Exit(1)
	}
	fmt.Printf("delayrelay: %s -> %s, delay %s ± %s, slow %v\n", *listen, *to, *delay, *jitter, *slowAtStart)
	var slow atomic.Bool
	slow.Store(*slowAtStart)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		for sig := range sigs {
			slow.Store(sig == syscall.SIGUSR1)
			fmt.Printf("delayrelay: %s: slow %v\n", time.Now().Format(time.RFC3339Nano), slow.Load())
		}
	}()
	d := func() time.Duration {
		switch {
		case !slow.Load():
			return 0
		case *jitter == 0:
			return *delay
		}
		return *delay - *jitter + rand.N(2**jitter)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "delayrelay:", err)
			os.Exit(1)
		}
		go relay(c, *to, d)
	}
}

func relay(c net.Conn, to string, d func() time.Duration) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", to, 5*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "delayrelay: dial:", err)
		return
	}
	defer up.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipe(up, c, d) }()
	go func() { defer wg.Done(); pipe(c, up, d) }()
	wg.Wait()
}

type chunk struct {
	at   time.Time
	data []byte
}

// pipe copies src to dst, each chunk delayed; when either side ends, both
// connections are closed so the other direction ends too.
func pipe(dst, src net.Conn, d func() time.Duration) {
	q := make(chan chunk, 4096)
	go func() {
		defer close(q)
		var last time.Time
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				at := time.Now().Add(d())
				if at.Before(last) {
					at = last
				}
				last = at
				q <- chunk{at: at, data: buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for ch := range q {
		time.Sleep(time.Until(ch.at))
		if _, err := dst.Write(ch.data); err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	for range q { // let the reader end
	}
}
