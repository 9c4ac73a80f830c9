package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/bench/result"
	"github.com/vxbridge/vxbridge/bench/sim"
	"github.com/vxbridge/vxbridge/vxlan"
)

// firstPacketProbes is how many remote endpoints each observer is asked
// for once, and firstPacketWait how long one probe may take (an ARP
// request is retried every second).
const (
	firstPacketProbes = 20
	firstPacketWait   = 5 * time.Second
)

// firstPackets asks each observer's network, as a container would, for
// remote endpoints it has not talked to: an ARP request from the bridge
// (what a container's first packet to a peer sends), timed until it is
// answered, then one datagram to the peer, timed until the VXLAN device
// has its FDB entry. Eager programming answers the ARP from entries it
// made long before; on demand the request is the kernel's miss.
func (p *simPoint) firstPackets(recs []sim.Record) {
	for i, ob := range p.obs {
		r := &p.res.Observers[i]
		var arp, fdb []float64
		for _, rec := range aliveAdds(recs, vniSet(ob.nets), firstPacketProbes) {
			a, f, err := ob.firstPacket(rec)
			if err != nil {
				r.FirstPacketFailed++
				p.t.Logf("%s: first packet to %s (%s): %v", ob.name, rec.IP, rec.MAC, err)
				continue
			}
			arp, fdb = append(arp, ms(a)), append(fdb, ms(f))
		}
		r.FirstARP, r.FirstFDB = result.SummariseMs(arp), result.SummariseMs(fdb)
		p.t.Logf("%s: first packet to %d remote endpoints: ARP answered p50 %.1f p99 %.1f ms; FDB entry after the first frame p50 %.1f p99 %.1f ms; %d failed",
			ob.name, r.FirstARP.N, r.FirstARP.P50Ms, r.FirstARP.P99Ms, r.FirstFDB.P50Ms, r.FirstFDB.P99Ms, r.FirstPacketFailed)
	}
}

// aliveAdds is up to n endpoints added in vnis that were not withdrawn
// later, the latest first (with the oldest-first stop policy they are the
// ones still alive longest).
func aliveAdds(recs []sim.Record, vnis map[uint32]bool, n int) []sim.Record {
	gone := map[string]bool{}
	var out []sim.Record
	for i := len(recs) - 1; i >= 0 && len(out) < n; i-- {
		r := recs[i]
		switch {
		case !vnis[r.VNI]:
		case r.Op == sim.OpDel:
			gone[r.MAC] = true
		case !gone[r.MAC]:
			out = append(out, r)
		}
	}
	return out
}

// firstPacket times the ARP answer for rec's address on its network's
// bridge, and then its FDB entry after one datagram to it.
func (o *observer) firstPacket(rec sim.Record) (arp, fdb time.Duration, err error) {
	var n *obsNet
	for _, on := range o.nets {
		if on.VNI == rec.VNI {
			n = on
		}
	}
	ip, err := netip.ParseAddr(rec.IP)
	if err != nil || n == nil {
		return 0, 0, fmt.Errorf("record %+v: not in the observer's networks", rec)
	}
	at, link, gw, err := o.gatewayOf(n)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if out, err := nsExec(at, "busybox", "arping", "-f", "-c", "5", "-w", "5", "-I", link, "-s", gw.String(), ip.String()); err != nil {
		return 0, 0, fmt.Errorf("arping: %w: %s", err, out)
	}
	arp = time.Since(start)
	// One echo request: the peer's VTEP is no host, so no answer comes;
	// the frame is what makes the device miss. Timed from the start of
	// ping, which sends at once, to the entry.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ping := nsCommand(ctx, at, "ping", "-c", "1", "-W", "1", "-I", gw.String(), ip.String())
	sent := time.Now()
	if err := ping.Start(); err != nil {
		return 0, 0, fmt.Errorf("ping: %w", err)
	}
	seen, err := waitFDB(n, rec.MAC, firstPacketWait)
	ping.Wait() // it reports no answer, as it must
	if err != nil {
		return 0, 0, err
	}
	return arp, max(seen.Sub(sent), 0), nil
}

// gatewayOf finds where n's gateway address is (the gateway link's host
// end in the host's namespace when the network has a namespace of its own,
// else the bridge): that namespace, the link and the address.
func (o *observer) gatewayOf(n *obsNet) (nsPath, link string, gw netip.Addr, err error) {
	for _, p := range []string{o.h.NetNS().Path(), n.nsPath} {
		if link, gw, ok := addrIn(p, n.Subnet); ok {
			return p, link, gw, nil
		}
	}
	return "", "", netip.Addr{}, fmt.Errorf("%s: no link has an address in %s (the gateway of vxlan.id %d)", o.name, n.Subnet, n.VNI)
}

// addrIn is the link of the namespace at nsPath with an IPv4 address in
// subnet, and that address.
func addrIn(nsPath string, subnet netip.Prefix) (string, netip.Addr, bool) {
	nlh, closeNS, err := handleAt(nsPath)
	if err != nil {
		return "", netip.Addr{}, false
	}
	defer closeNS()
	addrs, err := nlh.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", netip.Addr{}, false
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok || !subnet.Contains(ip) {
			continue
		}
		l, err := nlh.LinkByIndex(a.LinkIndex)
		if err != nil {
			return "", netip.Addr{}, false
		}
		return l.Attrs().Name, ip, true
	}
	return "", netip.Addr{}, false
}

// waitFDB polls n's VXLAN device every 2 ms until it has an FDB entry for
// mac and returns when it saw it.
func waitFDB(n *obsNet, mac string, wait time.Duration) (time.Time, error) {
	nlh, closeNS, err := handleAt(n.nsPath)
	if err != nil {
		return time.Time{}, err
	}
	defer closeNS()
	dev, err := nlh.LinkByName(vxlan.DeviceName(n.VNI))
	if err != nil {
		return time.Time{}, err
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return time.Time{}, err
	}
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		fdb, err := nlh.NeighList(dev.Attrs().Index, unix.AF_BRIDGE)
		if err != nil {
			return time.Time{}, err
		}
		for _, e := range fdb {
			if e.HardwareAddr.String() == hw.String() {
				return time.Now(), nil
			}
		}
	}
	return time.Time{}, fmt.Errorf("no FDB entry for %s on %s within %v", mac, dev.Attrs().Name, wait)
}

// nsExec runs a command in the network namespace at nsPath, bounded.
func nsExec(nsPath string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := nsCommand(ctx, nsPath, name, args...).CombinedOutput()
	return string(out), err
}

// nsCommand is a command to run in the network namespace at nsPath until
// ctx ends.
func nsCommand(ctx context.Context, nsPath string, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + nsPath, name}, args...)...)
}
