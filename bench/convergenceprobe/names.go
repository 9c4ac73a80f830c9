package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// runNames is the name prober: for name i it waits for DIR/arm-i, asks
// docker's embedded DNS for it every interval until an answer holds an
// address, and writes the time of that answer to DIR/reach-i; then it
// waits for DIR/disarm-i and asks until an answer holds none (NXDOMAIN,
// no data or a failure), written to DIR/gone-i. Queries go out on one
// socket without waiting for each other: a slow answer (docker forwarding
// a name it does not know) does not delay the next question.
func runNames(dir string, names []string, server string, interval time.Duration) error {
	conn, err := net.Dial("udp", server)
	if err != nil {
		return err
	}
	defer conn.Close()
	answers := make(chan answer, 64)
	go readAnswers(conn, answers)
	for i, name := range names {
		waitFile(filepath.Join(dir, "arm-"+strconv.Itoa(i)), interval)
		at, err := ask(conn, answers, name, interval, true)
		if err != nil {
			return err
		}
		if err := writeTime(dir, "reach-"+strconv.Itoa(i), at); err != nil {
			return err
		}
		waitFile(filepath.Join(dir, "disarm-"+strconv.Itoa(i)), interval)
		if at, err = ask(conn, answers, name, interval, false); err != nil {
			return err
		}
		if err := writeTime(dir, "gone-"+strconv.Itoa(i), at); err != nil {
			return err
		}
	}
	return nil
}

type answer struct {
	id    uint16
	found bool // holds an address
	at    time.Time
}

func readAnswers(conn net.Conn, out chan<- answer) {
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, err := conn.Read(buf)
		at := time.Now()
		if err != nil {
			if isClosed(err) {
				close(out)
				return
			}
			continue // ICMP unreachable and the like
		}
		r := new(dns.Msg)
		if r.Unpack(buf[:n]) != nil {
			continue
		}
		found := false
		for _, rr := range r.Answer {
			if _, ok := rr.(*dns.A); ok {
				found = true
			}
		}
		out <- answer{id: r.Id, found: found, at: at}
	}
}

// ask sends A queries for name every interval until an answer to one of
// them holds an address (want) or does not (!want), and returns when it
// arrived.
func ask(conn net.Conn, answers <-chan answer, name string, interval time.Duration, want bool) (time.Time, error) {
	sent := map[uint16]bool{}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(name), dns.TypeA)
		b, err := q.Pack()
		if err != nil {
			return time.Time{}, err
		}
		sent[q.Id] = true
		if _, err := conn.Write(b); err != nil && !isRefused(err) {
			return time.Time{}, err
		}
		for waiting := true; waiting; {
			select {
			case a, ok := <-answers:
				if !ok {
					return time.Time{}, fmt.Errorf("socket closed")
				}
				if sent[a.id] && a.found == want {
					return a.at, nil
				}
			case <-tick.C:
				waiting = false
			}
		}
	}
}

func waitFile(path string, interval time.Duration) {
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(interval)
	}
}

func writeTime(dir, name string, at time.Time) error {
	tmp := filepath.Join(dir, "."+name)
	if err := os.WriteFile(tmp, []byte(strconv.FormatInt(at.UnixNano(), 10)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

func isClosed(err error) bool  { return errors.Is(err, net.ErrClosed) }
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
