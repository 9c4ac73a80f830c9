package e2e

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// The VXLAN port rule (firewall/guard.go), end to end: a namespace on the
// underlay that is no vxbridge host aims a kernel VXLAN device of the
// network's VNI at a host and pings a container through it. Used by
// TestTrustAcrossHosts (iptables mode, ipsets) and TestNFTablesAcrossHosts
// (docker's nftables mode, sets of vxbridge's own tables).

// attacker is a namespace on the underlay that is no vxbridge host.
func (m *multiHost) attacker(t *testing.T) *testbed.NetNS {
	t.Helper()
	evil := testbed.NewNetNS(t)
	testbed.Veth(t, m.ul.NetNS(), "ulevil", evil, "eth0")
	m.ul.NetNS().Exec(t, "ip", "link", "set", "ulevil", "master", "br0")
	evil.Exec(t, "ip", "addr", "add", evilIP+"/24", "dev", "eth0")
	evil.Exec(t, "ip", "link", "set", "eth0", "up")
	return evil
}

// vxlanInjector sends VXLAN frames from the attacker to container c on
// host h, past h's VXLAN port.
type vxlanInjector struct {
	evil *testbed.NetNS
	h    *testbed.Host
	c    ctr
}

// injector gives the attacker a VXLAN device of the network's VNI aimed
// at the first host, with a neighbour entry for its container (whose MAC
// follows its address).
func (m *multiHost) injector(t *testing.T, evil *testbed.NetNS) *vxlanInjector {
	t.Helper()
	in := &vxlanInjector{evil: evil, h: m.hosts[0], c: m.cs[0]}
	evil.Exec(t, "ip", "link", "add", "vxevil", "type", "vxlan", "id", strconv.Itoa(xVNI), "dstport", "4789",
		"local", evilIP, "remote", m.vteps[in.h], "dev", "eth0", "nolearning")
	evil.Exec(t, "ip", "addr", "add", strings.TrimSuffix(xSubnet4, "0/24")+"250/24", "dev", "vxevil")
	evil.Exec(t, "ip", "link", "set", "vxevil", "up")
	evil.Exec(t, "ip", "neigh", "add", in.c.ip4, "lladdr", in.c.mac, "dev", "vxevil", "nud", "permanent")
	return in
}

// delivered pings the container from the attacker and returns how many
// echo requests reached it. open, when set, takes a defence away just
// before (the reconciler puts it back within its interval, or a second
// after an nf_tables change, so nothing slow may come between).
func (in *vxlanInjector) delivered(t *testing.T, open func()) int {
	t.Helper()
	before := inEchos(t, in.c)
	if open != nil {
		open()
	}
	_, _ = in.evil.TryExec("ping", "-c", "3", "-i", "0.2", "-W", "1", in.c.ip4)
	return inEchos(t, in.c) - before
}

// requireDropped: not one of the attacker's frames reaches the container.
func (in *vxlanInjector) requireDropped(t *testing.T, when string) {
	t.Helper()
	if n := in.delivered(t, nil); n != 0 {
		t.Fatalf("%d echo requests from the attacker's VXLAN device reached %s %s", n, in.c.name, when)
	}
}

// requireArrives is the control: with the defence open takes away, the
// same frames do reach the container, so the injection would be seen.
func (in *vxlanInjector) requireArrives(t *testing.T, open func(), without string) {
	t.Helper()
	n := 0
	for try := 0; try < 3 && n == 0; try++ {
		n = in.delivered(t, open)
	}
	if n == 0 {
		t.Fatalf("control: no frame reached %s even %s: the injection does not work", in.c.name, without)
	}
}

// otherVTEPs are the VTEPs of every host but h, sorted.
func (m *multiHost) otherVTEPs(h *testbed.Host) []string {
	var out []string
	for _, g := range m.hosts {
		if g != h {
			out = append(out, m.vteps[g])
		}
	}
	slices.Sort(out)
	return out
}

// sendRawFrames: not one echo request from the attacker reaches c1, and
// the first host's VXLAN port takes frames from the other hosts' VTEPs
// alone. As a control, the same frames do reach c1 while the attacker's
// address is in that host's set (until the reconciler takes it out
// again). The injector stays for further checks.
func (m *multiHost) sendRawFrames(t *testing.T, evil *testbed.NetNS) *vxlanInjector {
	t.Helper()
	in := m.injector(t, evil)
	if got := vtepSet(t, in.h); !slices.Equal(got, m.otherVTEPs(in.h)) {
		t.Errorf("%s's VXLAN port is open to %v, want the other hosts' VTEPs %v", in.h.Name, got, m.otherVTEPs(in.h))
	}
	in.requireDropped(t, "")
	in.requireArrives(t, func() { allowVTEP(t, in.h, evilIP) }, "with the attacker's address allowed")
	testbed.WaitFor(t, 10*time.Second, func() error {
		if slices.Contains(vtepSet(t, in.h), evilIP) {
			return fmt.Errorf("the reconciler has not taken %s out of %s's set yet", evilIP, in.h.Name)
		}
		return nil
	})
	in.requireDropped(t, "after the reconciler repaired the set")
	return in
}

var snmpIcmp = regexp.MustCompile(`(?m)^Icmp: (.*)\nIcmp: (.*)$`)

// inEchos is the number of ICMP echo requests container c received.
func inEchos(t *testing.T, c ctr) int {
	t.Helper()
	out := c.h.MustDocker(t, "exec", c.name, "cat", "/proc/net/snmp")
	m := snmpIcmp.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s: no Icmp lines in /proc/net/snmp:\n%s", c.name, out)
	}
	names, vals := strings.Fields(m[1]), strings.Fields(m[2])
	if i := slices.Index(names, "InEchos"); i >= 0 && i < len(vals) {
		n, _ := strconv.Atoi(vals[i])
		return n
	}
	t.Fatalf("%s: no InEchos in %q", c.name, m[1])
	return 0
}

// nftMode says whether h's docker runs its nftables firewall, where
// vxbridge keeps the VTEPs in a set of its own table instead of an ipset.
func nftMode(h *testbed.Host) bool { return h.FirewallBackend() == testbed.FirewallNFTables }

// nftSetRef names the IPv4 VTEP set for nft: family, table, set.
var nftSetRef = []string{"ip", firewall.NFTTable, firewall.VTEPSet4}

// ipsetHandle is a netlink handle in h's namespace.
func ipsetHandle(t *testing.T, h *testbed.Host) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(h.NetNS().Path())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nlh, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	return nlh
}

var nftElements = regexp.MustCompile(`(?s)elements = \{([^}]*)\}`)

// vtepSet lists h's VXLAN port set of IPv4 VTEPs, sorted: the ipset, or in
// nftables mode the set of vxbridge's table, as `nft list set` prints it.
func vtepSet(t *testing.T, h *testbed.Host) []string {
	t.Helper()
	var out []string
	if nftMode(h) {
		listing := h.Exec(t, "nft", append([]string{"list", "set"}, nftSetRef...)...)
		if m := nftElements.FindStringSubmatch(listing); m != nil {
			for _, e := range strings.Split(m[1], ",") {
				out = append(out, strings.TrimSpace(e))
			}
		}
		slices.Sort(out)
		return out
	}
	nlh := ipsetHandle(t, h)
	defer nlh.Close()
	res, err := nlh.IpsetList(firewall.VTEPSet4)
	if err != nil {
		t.Fatalf("%s: ipset %s: %v", h.Name, firewall.VTEPSet4, err)
	}
	for _, e := range res.Entries {
		out = append(out, e.IP.String())
	}
	slices.Sort(out)
	return out
}

// allowVTEP adds ip to h's set, behind the plugin's back.
func allowVTEP(t *testing.T, h *testbed.Host, ip string) {
	t.Helper()
	if nftMode(h) {
		h.Exec(t, "nft", append(append([]string{"add", "element"}, nftSetRef...), "{", ip, "}")...)
		return
	}
	nlh := ipsetHandle(t, h)
	defer nlh.Close()
	if err := nlh.IpsetAdd(firewall.VTEPSet4, &netlink.IPSetEntry{IP: net.ParseIP(ip).To4(), Replace: true}); err != nil {
		t.Fatal(err)
	}
}
