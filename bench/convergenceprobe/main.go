// Command convergenceprobe is figure 5's prober: it runs inside a container
// (static, in the bench image) started long before the measurement, so no
// `docker exec` start-up is counted. For target i of -targets it waits until
// the harness creates DIR/arm-i, then sends an ICMP echo request every
// -interval until the target answers, and writes the wall-clock time of the
// first reply (Unix nanoseconds) to DIR/reach-i. The harness compares it with
// the time `docker run -d` of the target returned on the other host.
//
// ARP would otherwise set the resolution: a neighbour entry left INCOMPLETE
// by an unanswered ARP request is retried only every retrans_time (1 s), so
// the prober deletes such an entry before each echo and every echo starts a
// fresh ARP request (it needs CAP_NET_ADMIN for that).
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func main() {
	dir := flag.String("dir", "/probe", "directory shared with the harness (arm-I, reach-I)")
	targets := flag.String("targets", "", "comma-separated IPv4 addresses, probed in order")
	iface := flag.String("iface", "eth0", "interface whose neighbour entries are reset")
	interval := flag.Duration("interval", time.Millisecond, "time between echo requests")
	names := flag.String("names", "", "comma-separated names: probe them by DNS (names.go) instead of targets by ICMP")
	server := flag.String("dns", "127.0.0.11:53", "DNS server the names are asked of (docker's embedded DNS)")
	flag.Parse()
	var err error
	if *names != "" {
		err = runNames(*dir, strings.Split(*names, ","), *server, *interval)
	} else {
		err = run(*dir, strings.Split(*targets, ","), *iface, *interval)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "convergenceprobe:", err)
		os.Exit(1)
	}
}

func run(dir string, targets []string, iface string, interval time.Duration) error {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
	if err != nil {
		return fmt.Errorf("raw icmp socket: %w", err)
	}
	tv := unix.NsecToTimeval(interval.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	id := uint16(os.Getpid())
	var seq uint16
	for i, target := range targets {
		ip := net.ParseIP(strings.TrimSpace(target)).To4()
		if ip == nil {
			return fmt.Errorf("target %q: not an IPv4 address", target)
		}
		waitFile(filepath.Join(dir, "arm-"+strconv.Itoa(i)), interval)
		for {
			resetNeigh(link.Attrs().Index, ip)
			seq++
			if err := echo(fd, ip, id, seq); err != nil {
				return err
			}
			if at, ok := awaitReply(fd, ip, id, seq, interval); ok {
				if err := writeTime(dir, "reach-"+strconv.Itoa(i), at); err != nil {
					return err
				}
				break
			}
		}
	}
	return nil
}

// resetNeigh deletes ip's neighbour entry while it waits for (INCOMPLETE)
// or gave up on (FAILED) an ARP answer, so the next packet asks at once.
func resetNeigh(idx int, ip net.IP) {
	ns, err := netlink.NeighList(idx, netlink.FAMILY_V4)
	if err != nil {
		return
	}
	for _, n := range ns {
		if n.IP.Equal(ip) && n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) != 0 {
			_ = netlink.NeighDel(&n)
		}
	}
}

func echo(fd int, ip net.IP, id, seq uint16) error {
	pkt := make([]byte, 16)
	pkt[0] = 8 // echo request
	binary.BigEndian.PutUint16(pkt[4:], id)
	binary.BigEndian.PutUint16(pkt[6:], seq)
	binary.BigEndian.PutUint16(pkt[2:], checksum(pkt))
	sa := &unix.SockaddrInet4{}
	copy(sa.Addr[:], ip)
	err := unix.Sendto(fd, pkt, 0, sa)
	if errors.Is(err, unix.EHOSTUNREACH) || errors.Is(err, unix.ENOBUFS) {
		return nil // no neighbour yet
	}
	return err
}

// awaitReply reads until the matching echo reply arrives (its arrival
// time, true) or wait passes.
func awaitReply(fd int, ip net.IP, id, seq uint16, wait time.Duration) (time.Time, bool) {
	buf := make([]byte, 1500)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		at := time.Now()
		if err != nil {
			return at, false // timeout (SO_RCVTIMEO) or interrupted
		}
		sa, ok := from.(*unix.SockaddrInet4)
		if !ok || !net.IP(sa.Addr[:]).Equal(ip) || n < 20 {
			continue
		}
		ihl := int(buf[0]&0x0f) * 4
		if n < ihl+8 {
			continue
		}
		icmp := buf[ihl:n]
		if icmp[0] == 0 && binary.BigEndian.Uint16(icmp[4:]) == id && binary.BigEndian.Uint16(icmp[6:]) <= seq {
			return at, true
		}
	}
	return time.Time{}, false
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = (s & 0xffff) + s>>16
	}
	return ^uint16(s)
}
