package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/status"
)

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
