package firewall

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// protoNumbers are the IP protocol numbers of portProtos.
var protoNumbers = map[string]uint8{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}

// dnatFlows matches the conntrack entries of connections the kernel DNAT'ed
// for a set of mappings: sent to the host port (and host address, when the
// mapping names one), answered by the container's address and port. The
// host's own connections to other machines on that port are left alone.
type dnatFlows []PortMapping

func (ms dnatFlows) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	for _, m := range ms {
		if f.Forward.Protocol != protoNumbers[m.Proto] || f.Forward.DstPort != m.HostPort ||
			f.Reverse.SrcPort != m.ContainerPort || !sameAddr(f.Reverse.SrcIP, m.ContainerIP) {
			continue
		}
		if m.HostIP.IsUnspecified() || sameAddr(f.Forward.DstIP, m.HostIP) {
			return true
		}
	}
	return false
}

func sameAddr(ip []byte, a netip.Addr) bool {
	b, ok := netip.AddrFromSlice(ip)
	return ok && b.Unmap() == a
}

// FlushConntrack deletes the conntrack entries of the connections the
// kernel DNAT'ed for mappings, in the calling thread's network namespace.
func FlushConntrack(mappings []PortMapping) error {
	byFamily := map[netlink.InetFamily]dnatFlows{}
	for _, m := range mappings {
		if !m.kernelPath() {
			continue
		}
		fam := netlink.InetFamily(unix.AF_INET)
		if m.ContainerIP.Is6() {
			fam = unix.AF_INET6
		}
		byFamily[fam] = append(byFamily[fam], m)
	}
	if len(byFamily) == 0 {
		return nil
	}
	h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("flush conntrack: %w", err)
	}
	defer h.Close()
	// A netlink request has no deadline of its own: bound it as the
	// iptables programs are (exec.go).
	if err := h.SetSocketTimeout(defaultLimits.timeout); err != nil {
		return fmt.Errorf("flush conntrack: %w", err)
	}
	var errs []error
	for fam, flows := range byFamily {
		if _, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, flows); err != nil {
			errs = append(errs, fmt.Errorf("flush conntrack entries of %v: %w", []PortMapping(flows), err))
		}
	}
	return errors.Join(errs...)
}
