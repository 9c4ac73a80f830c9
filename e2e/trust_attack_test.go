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
	"github.com/vxbridge/vxbridge/status"
)

// attacker is a namespace on the underlay that is no vxbridge host.
func (tb *trustBed) attacker(t *testing.T) *testbed.NetNS {
	t.Helper()
	evil := testbed.NewNetNS(t)
	testbed.Veth(t, tb.ul.NetNS(), "ulevil", evil, "eth0")
	tb.ul.NetNS().Exec(t, "ip", "link", "set", "ulevil", "master", "br0")
	evil.Exec(t, "ip", "addr", "add", evilIP+"/24", "dev", "eth0")
	evil.Exec(t, "ip", "link", "set", "eth0", "up")
	return evil
}

func endpointID(t *testing.T, c ctr) string {
	t.Helper()
	return strings.TrimSpace(c.h.MustDocker(t, "inspect", "-f",
		fmt.Sprintf(`{{with index .NetworkSettings.Networks %q}}{{.EndpointID}}{{end}}`, xNet), c.name))
}

// forgeRecords writes from the attacker's namespace, without an identity
// and then with host t3's (stolen), what would take addresses, MACs and
// peers from the real hosts if it were believed.
func (tb *trustBed) forgeRecords(t *testing.T, evil *testbed.NetNS) {
	t.Helper()
	c1, c2 := tb.cs[0], tb.cs[1]
	prefix := fmt.Sprintf("/vxbridge/net/%d/", xVNI)
	stolen := fmt.Sprintf(`{"mac":%q,"ipv4":%q}`, c1.mac, c1.ip4)
	if out, err := tb.etcdctl(evil, "", "put", prefix+"members/tz", `{"host":"tz","vtep":"`+evilIP+`"}`); err == nil {
		t.Fatalf("a write without an identity was taken: %s", out)
	}
	t3 := "vxbridge-host-t3:" + tb.passwords["t3"]
	for _, op := range [][]string{
		{"put", "/vxbridge/hosts/t1", `{"id":"t1","vtep":"` + evilIP + `","port":4789,"layout":2}`},
		{"del", "/vxbridge/hosts/t1"},
		{"put", "/vxbridge/endpoints/t1/" + endpointID(t, c1), stolen},
		{"put", fmt.Sprintf("/vxbridge/memberships/t1/%d", xVNI), `{"host":"t1","vtep":"` + evilIP + `"}`},
		{"put", fmt.Sprintf("/vxbridge/memberships/tz/%d", xVNI), `{"host":"tz","vtep":"` + evilIP + `"}`},
		{"del", "/vxbridge/endpoints/t2/", "--prefix"},
	} {
		if out, err := tb.etcdctl(evil, t3, op...); err == nil || !strings.Contains(out, "permission denied") {
			t.Errorf("t3's identity: etcdctl %s: %v %s, want permission denied", strings.Join(op, " "), err, out)
		}
	}
	// What t3's identity may write in the network's prefix.
	t3Claim := fmt.Sprintf(`{"id":"evil2","host":"t3","vni":%d,"mac":"02:00:00:00:00:01","ipv4":%q}`, xVNI, c2.ip4)
	for _, op := range [][]string{
		{"put", prefix + "members/tz", `{"host":"tz","vtep":"` + evilIP + `","port":4789}`},
		{"put", prefix + "eps/tz/evil", stolen},
		{"put", prefix + "members/t1", `{"host":"t1","vtep":"` + evilIP + `","port":4789}`},
		{"put", prefix + "eps/t1/" + endpointID(t, c1), fmt.Sprintf(`{"mac":"00:00:00:00:00:01","ipv4":%q}`, c1.ip4)},
		{"del", prefix + "members/t2"},
		// t3 speaking for itself: its copy and its record, claiming c2's
		// address, and the gateway.
		{"put", "/vxbridge/endpoints/t3/evil2", t3Claim},
		{"put", prefix + "eps/t3/evil2", t3Claim},
		{"put", prefix + "eps/t3/gw", fmt.Sprintf(`{"mac":"02:00:00:00:00:02","ipv4":"%s1"}`, strings.TrimSuffix(xSubnet4, "0/24"))},
	} {
		if out, err := tb.etcdctl(evil, t3, op...); err != nil {
			t.Fatalf("t3's identity: etcdctl %s: %v %s", strings.Join(op, " "), err, out)
		}
	}
}

// requireRefusalsShown: host t1's status lists the forged records and the
// address claim refused, and its metrics counted them.
func (tb *trustBed) requireRefusalsShown(t *testing.T, before float64) {
	t.Helper()
	h1 := tb.hosts[0]
	want := map[string]bool{"tz record": false, "tz/evil record": false, "t3/evil2 address " + tb.cs[1].ip4: false}
	testbed.WaitFor(t, 10*time.Second, func() error {
		for _, c := range clusterConflicts(t, h1) {
			key := c.Endpoint + " " + c.What
			if c.What == "address" {
				key += " " + c.Value
			}
			if _, ok := want[key]; ok {
				want[key] = true
			}
		}
		var missing []string
		for k, seen := range want {
			if !seen {
				missing = append(missing, k)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("status of %s does not list %q", h1.Name, missing)
		}
		return nil
	})
	if got := value(t, scrape(t, h1), "vxbridge_peer_conflicts_total", nil); got < before+3 {
		t.Errorf("vxbridge_peer_conflicts_total %v, want at least %v", got, before+3)
	}
	table := runCLI(t, h1, true, "status")
	if !strings.Contains(table, "REFUSED CLAIMS") || !strings.Contains(table, "forged") {
		t.Errorf("status table does not show the forged records:\n%s", table)
	}
	t.Logf("%s's status lists:\n%s", h1.Name, conflictLines(clusterConflicts(t, h1)))
}

func conflictLines(cs []status.Conflict) string {
	var out []string
	for _, c := range cs {
		out = append(out, fmt.Sprintf("  %s %s %s %s held by %s", c.Network, c.Endpoint, c.What, c.Value, c.HeldBy))
	}
	return strings.Join(out, "\n")
}

// sendRawFrames aims a kernel VXLAN device of the network's VNI at host
// t1 and pings container c1 through it (its MAC follows its address): not
// one echo request reaches c1, and t1's VXLAN port takes frames from the
// other hosts' VTEPs alone. As a control, the same frames do reach c1
// while the attacker's address is in t1's set (until the reconciler
// takes it out again).
func (tb *trustBed) sendRawFrames(t *testing.T, evil *testbed.NetNS) {
	t.Helper()
	h1, c1 := tb.hosts[0], tb.cs[0]
	evil.Exec(t, "ip", "link", "add", "vxevil", "type", "vxlan", "id", strconv.Itoa(xVNI), "dstport", "4789",
		"local", evilIP, "remote", tb.vteps[h1], "dev", "eth0", "nolearning")
	evil.Exec(t, "ip", "addr", "add", strings.TrimSuffix(xSubnet4, "0/24")+"250/24", "dev", "vxevil")
	evil.Exec(t, "ip", "link", "set", "vxevil", "up")
	evil.Exec(t, "ip", "neigh", "add", c1.ip4, "lladdr", c1.mac, "dev", "vxevil", "nud", "permanent")
	// inject pings c1 from the attacker; with allow, the attacker's address
	// goes into t1's set just before (the reconciler takes it out within
	// its interval, so nothing slow may come between).
	inject := func(allow bool) int {
		before := inEchos(t, c1)
		if allow {
			allowVTEP(t, h1, evilIP)
		}
		_, _ = evil.TryExec("ping", "-c", "3", "-i", "0.2", "-W", "1", c1.ip4)
		return inEchos(t, c1) - before
	}
	if got := vtepSet(t, h1); !slices.Equal(got, []string{tb.vteps[tb.hosts[1]], tb.vteps[tb.hosts[2]]}) {
		t.Errorf("%s's VXLAN port is open to %v, want the two other hosts' VTEPs", h1.Name, got)
	}
	if n := inject(false); n != 0 {
		t.Fatalf("%d echo requests from the attacker's VXLAN device reached %s", n, c1.name)
	}
	delivered := 0
	for try := 0; try < 3 && delivered == 0; try++ {
		delivered = inject(true)
	}
	if delivered == 0 {
		t.Fatalf("control: no frame reached %s even with the attacker's address allowed: the injection does not work", c1.name)
	}
	testbed.WaitFor(t, 10*time.Second, func() error {
		if slices.Contains(vtepSet(t, h1), evilIP) {
			return fmt.Errorf("the reconciler has not taken %s out of %s's set yet", evilIP, h1.Name)
		}
		return nil
	})
	if n := inject(false); n != 0 {
		t.Fatalf("%d echo requests reached %s after the reconciler repaired the set", n, c1.name)
	}
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

// vtepSet lists h's VXLAN port set of IPv4 VTEPs, sorted.
func vtepSet(t *testing.T, h *testbed.Host) []string {
	t.Helper()
	nlh := ipsetHandle(t, h)
	defer nlh.Close()
	res, err := nlh.IpsetList(firewall.VTEPSet4)
	if err != nil {
		t.Fatalf("%s: ipset %s: %v", h.Name, firewall.VTEPSet4, err)
	}
	var out []string
	for _, e := range res.Entries {
		out = append(out, e.IP.String())
	}
	slices.Sort(out)
	return out
}

// allowVTEP adds ip to h's set, behind the plugin's back.
func allowVTEP(t *testing.T, h *testbed.Host, ip string) {
	t.Helper()
	nlh := ipsetHandle(t, h)
	defer nlh.Close()
	if err := nlh.IpsetAdd(firewall.VTEPSet4, &netlink.IPSetEntry{IP: net.ParseIP(ip).To4(), Replace: true}); err != nil {
		t.Fatal(err)
	}
}
