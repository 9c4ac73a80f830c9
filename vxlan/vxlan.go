// Package vxlan makes the kernel side of cross-host networks: one VXLAN device
// per cross-host network, a port of the network's bridge, and the static
// forwarding (FDB) and neighbour entries that tell it where every remote
// endpoint lives. This file is pure (names, MTU arithmetic, desired state and
// the diff to apply); the netlink calls are in vxlan_linux.go.
//
// # Design notes
//
// Encapsulation model. A cross-host network is one L2 segment spread over
// several hosts: each host has the network's bridge (same subnet, same
// gateway address, answered locally) with its local veths and one VXLAN
// device as ports. A frame for a remote container leaves the bridge through
// the VXLAN device, which wraps it in UDP (port --vxlan-port, 4789) to the
// VTEP address of the host holding that container's MAC. There is no
// multicast group and no flooding: learning is off, so the device only knows
// what vxbridge writes, and the FDB holds no all-zeros default destination,
// so unknown unicast and broadcast are not replicated to every peer.
//
// ARP and ND never cross the underlay. The device runs with proxy on: it
// answers ARP requests and IPv6 neighbour solicitations that reach it from
// the bridge out of its own neighbour table. For that the table holds, per
// remote endpoint, a permanent IP -> MAC entry, and the FDB a permanent
// MAC -> remote VTEP entry. Both are written with replace-style calls
// (RTM_NEWNEIGH with NLM_F_REPLACE), so replaying an etcd event is harmless.
//
// What each remote endpoint costs. One FDB entry on the VXLAN device (the
// bridge also learns the MAC on the VXLAN port once traffic flows: one more
// bridge FDB entry, aged out normally) and one neighbour entry per address
// (IPv4 and IPv6: two for a dual-stack endpoint).
//
// Neighbour-table sizing. The kernel's limits (net.ipv4.neigh.default and
// net.ipv6.neigh.default gc_thresh1/2/3, 128/512/1024 by default) are for
// the whole table, every namespace's entries together; past gc_thresh3 the
// kernel refuses new entries (ENOBUFS, "neighbour table overflow") and ARP
// fails for any interface. Permanent entries are not counted against them
// (Linux 4.19 and later): on this machine's 6.18 kernel 3,000 permanent
// entries went in with gc_thresh3 at 1024 (the table then held 3,783), while
// reachable entries stopped at 1,016 with ENOBUFS. So eager programming
// (permanent entries) needs no limits raised, however large the cluster:
// figure 6 of BENCHMARKS.md has an observer holding 7,500 (1,000 hosts,
// each in 3 of 20 networks, 50 endpoints each) and 50,000 (one network of
// every host) with the default limits. What counts is the containers' own
// ARP and ND caches (every namespace's: each container's entry for each
// peer it talks to) and, with --peer-programming=on-demand, the entries of
// the peers talked to (reachable, aged by the kernel). Size gc_thresh3 at
// twice what a host's containers and peers use at once: 50 containers each
// talking to 40 peers is 2,000 entries, so gc_thresh3 4096 and gc_thresh2
// 2048. In on-demand mode RaisedLimits compares the entries the manager
// holds plus NeighHeadroom with gc_thresh3, and Manager.EnsureNeighLimits
// raises the limits (never lowers them), logging what it did; the limits
// are the machine's, shown only in the initial network namespace, so a
// vxbridge in another namespace logs a warning once instead. `vxbridge
// doctor` (check "neighbours") counts the table's entries in every
// namespace (/proc/net/stat/arp_cache), leaves out vxbridge's permanent
// ones, and says when the count nears the limits or the kernel refused an
// entry since boot.
//
// MTU. VXLAN over IPv4 adds 50 bytes (outer Ethernet 14 is not counted in the
// MTU: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14). The bridge, the
// veths and the VXLAN device get the underlay MTU minus 50, unless the
// network asks for less.
package vxlan

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// Overhead is what VXLAN over IPv4 adds to each inner frame's IP packet.
const Overhead = 50

// DefaultPort is the IANA VXLAN port.
const DefaultPort = 4789

// MaxVNI is the largest 24-bit VXLAN network identifier.
const MaxVNI = 1<<24 - 1

// DevicePrefix starts the VXLAN device's name; the VNI in hex follows, so the
// name is at most 10 bytes of the 15 an interface name may have.
const DevicePrefix = "vxv-"

// DeviceName is the VXLAN device name of vni.
func DeviceName(vni uint32) string { return fmt.Sprintf("%s%x", DevicePrefix, vni) }

// ValidVNI reports whether vni fits VXLAN's 24 bits and is not 0.
func ValidVNI(vni uint64) bool { return vni >= 1 && vni <= MaxVNI }

// MTU is the MTU of a cross-host network's links: underlay MTU - Overhead,
// or requested when that is lower (0: not requested).
func MTU(underlay, requested int) int {
	m := underlay - Overhead
	if requested > 0 && requested < m {
		return requested
	}
	return m
}

// Device is the VXLAN device of one cross-host network.
type Device struct {
	Name   string
	Alias  string // ownership mark, as on vxbridge's other links
	VNI    uint32
	Port   int        // UDP destination and listening port
	Local  netip.Addr // this host's VTEP address (source of outer packets)
	Parent string     // underlay interface the VTEP address is on ("" = any)
	MTU    int
	Bridge string // the network's bridge, of which the device is a port
	// Isolated makes the device an isolated bridge port (icc=false): the
	// bridge forwards nothing between it and the containers' isolated
	// ports, so they are kept apart across hosts as on one.
	Isolated bool
	// OnDemand asks the kernel for a notification whenever the device has
	// no entry for a frame's MAC or an ARP/ND target (l2miss, l3miss), so
	// entries can be programmed for the peers actually talked to only
	// (package peers, --peer-programming=on-demand).
	OnDemand bool
}

// Validate refuses a device config the kernel would reject or misuse.
func (d Device) Validate() error {
	switch {
	case d.Name == "" || len(d.Name) > 15:
		return fmt.Errorf("vxlan device name %q: want 1 to 15 bytes", d.Name)
	case !ValidVNI(uint64(d.VNI)):
		return fmt.Errorf("vxlan device %s: vni %d is outside 1-%d", d.Name, d.VNI, MaxVNI)
	case d.Port < 1 || d.Port > 65535:
		return fmt.Errorf("vxlan device %s: udp port %d is outside 1-65535", d.Name, d.Port)
	case !d.Local.IsValid():
		return fmt.Errorf("vxlan device %s: no local vtep address", d.Name)
	case d.Bridge == "":
		return fmt.Errorf("vxlan device %s: no bridge", d.Name)
	case d.Alias == "":
		// Ownership is the alias: an empty one would own nothing (package
		// netdev), so the device could never be found as ours again.
		return fmt.Errorf("vxlan device %s: no ownership alias", d.Name)
	}
	return nil
}

// Peer is an endpoint of the network on another host.
type Peer struct {
	MAC  net.HardwareAddr
	IPs  []netip.Addr
	VTEP netip.Addr // the VTEP address of the host it lives on
}

// FDB is a static forwarding entry: frames to MAC go to the VTEP Dst.
type FDB struct {
	MAC string // net.HardwareAddr.String() form
	Dst netip.Addr
}

// Neigh is a permanent neighbour entry the device answers ARP/ND from.
type Neigh struct {
	IP  netip.Addr
	MAC string
}

// Table is the set of entries of one VXLAN device.
type Table struct {
	FDB   []FDB
	Neigh []Neigh
}

// Desired is the table the peers ask for, sorted. Peers without a valid MAC
// or VTEP are skipped. Should two peers claim the same MAC (or the same IP),
// the one sorting first wins, so every host programs the same choice.
func Desired(peers []Peer) Table {
	peers = slices.Clone(peers)
	slices.SortFunc(peers, func(a, b Peer) int {
		return cmp.Or(cmp.Compare(a.MAC.String(), b.MAC.String()), a.VTEP.Compare(b.VTEP))
	})
	fdb := map[string]netip.Addr{}
	neigh := map[netip.Addr]string{}
	for _, p := range peers {
		if len(p.MAC) != 6 || !p.VTEP.IsValid() {
			continue
		}
		mac := p.MAC.String()
		if _, ok := fdb[mac]; ok {
			continue
		}
		fdb[mac] = p.VTEP
		for _, ip := range p.IPs {
			if _, ok := neigh[ip.Unmap()]; ip.IsValid() && !ok {
				neigh[ip.Unmap()] = mac
			}
		}
	}
	var t Table
	for mac, dst := range fdb {
		t.FDB = append(t.FDB, FDB{MAC: mac, Dst: dst})
	}
	for ip, mac := range neigh {
		t.Neigh = append(t.Neigh, Neigh{IP: ip, MAC: mac})
	}
	t.sort()
	return t
}

func (t *Table) sort() {
	slices.SortFunc(t.FDB, func(a, b FDB) int { return cmp.Or(cmp.Compare(a.MAC, b.MAC), a.Dst.Compare(b.Dst)) })
	slices.SortFunc(t.Neigh, func(a, b Neigh) int { return cmp.Or(a.IP.Compare(b.IP), cmp.Compare(a.MAC, b.MAC)) })
}

// Changes is what turns an actual table into a desired one. Set entries are
// written with replace semantics, so an entry whose destination changed is
// only in Set, never in Del.
type Changes struct {
	SetFDB   []FDB
	DelFDB   []FDB
	SetNeigh []Neigh
	DelNeigh []Neigh
	// Transient writes the Set entries as reachable rather than permanent:
	// the kernel ages them out when unused (FDB entries after the device's
	// ageing time without traffic, neighbour entries by the usual garbage
	// collection), as entries programmed on demand should.
	Transient bool
}

// Miss is the kernel's notification that a device has no entry for a
// neighbour (IP set: an ARP or ND target, l3miss) or a MAC (l2miss).
type Miss struct {
	IP  netip.Addr
	MAC string
}

// Empty reports whether there is nothing to do.
func (c Changes) Empty() bool {
	return len(c.SetFDB)+len(c.DelFDB)+len(c.SetNeigh)+len(c.DelNeigh) == 0
}

// Plan compares the desired and actual tables. Actual entries are keyed by
// MAC (FDB) and IP (neighbour): an entry for the same key with another value
// is replaced, not deleted, so the data plane never has a gap for it.
func Plan(desired, actual Table) Changes {
	var c Changes
	c.SetFDB, c.DelFDB = diff(desired.FDB, actual.FDB, func(e FDB) string { return e.MAC })
	c.SetNeigh, c.DelNeigh = diff(desired.Neigh, actual.Neigh, func(e Neigh) netip.Addr { return e.IP })
	return c
}

func diff[E comparable, K comparable](desired, actual []E, key func(E) K) (set, del []E) {
	want := make(map[K]E, len(desired))
	for _, e := range desired {
		want[key(e)] = e
	}
	have := make(map[K][]E, len(actual))
	for _, e := range actual {
		have[key(e)] = append(have[key(e)], e)
	}
	for _, e := range desired {
		if !slices.Contains(have[key(e)], e) {
			set = append(set, e)
		}
	}
	for _, e := range actual {
		// A key may be held twice (an FDB entry per destination): the
		// replace above rewrites one, the extra ones go.
		if w, ok := want[key(e)]; !ok || (w != e && len(have[key(e)]) > 1) {
			del = append(del, e)
		}
	}
	return set, del
}

// NeighLimits are the kernel's neighbour-table thresholds of one family.
type NeighLimits struct {
	Thresh1, Thresh2, Thresh3 int
}

// NeighHeadroom is the number of table entries left to the rest of the host
// on top of what vxbridge programs.
const NeighHeadroom = 1024

// RaisedLimits returns limits that fit want counted entries plus
// NeighHeadroom, and whether l had to change. Limits already high enough are
// never lowered.
func RaisedLimits(l NeighLimits, want int) (NeighLimits, bool) {
	need := want + NeighHeadroom
	if l.Thresh3 >= need {
		return l, false
	}
	// Keep the kernel's default proportions (128/512/1024): thresh2 at half
	// of thresh3, thresh1 at an eighth.
	return NeighLimits{Thresh1: max(l.Thresh1, need/8), Thresh2: max(l.Thresh2, need/2), Thresh3: need}, true
}
