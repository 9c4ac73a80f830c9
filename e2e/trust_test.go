package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/etcdtest"
	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/status"
)

// Cross-host trust (issue 16), end to end: three hosts with etcd's TLS and
// authentication on, each with an identity vxbridge cluster add-host made;
// a fourth namespace on the underlay that is no vxbridge host writes forged
// records (with host t3's stolen identity, and with none) and sends raw
// VXLAN frames into the network. Nothing of it reaches a container or a
// table; the refused records show in status and metrics.

// trustBed is the three hosts and etcd, with TLS and auth.
type trustBed struct {
	*multiHost
	certs     *etcdtest.Certs
	rootPW    string // file
	passwords map[string]string
	ids       map[*testbed.Host]string
}

const (
	evilIP = "203.0.113.200"
	// trustTTL outlasts host t3's plugin being frozen while the attacker
	// writes in its name (its lease must stay, or its records go).
	trustTTL       = 30 * time.Second
	trustReconcile = 2 * time.Second
)

// freeze stops h's plugin (SIGSTOP) until the returned thaw is called, or
// the test ends.
func freeze(t *testing.T, h *testbed.Host) (thaw func()) {
	t.Helper()
	p := h.Plugin()
	thaw = func() {
		if err := p.Signal(syscall.SIGCONT); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(thaw)
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	return thaw
}

func TestTrustAcrossHosts(t *testing.T) {
	requirePlugin(t)
	testbed.EnsureCommands(t, map[string]string{"etcd": "etcd-server", "etcdctl": "etcd-client"})
	tb := newTrustBed(t)
	for i := range 3 {
		tb.addHost(t, fmt.Sprintf("t%d", i+1))
	}
	tb.oneContainerEach(t, 20*time.Second)
	tb.pingAll(t)
	before := tb.snapshot(t)
	conflictsBefore := value(t, scrape(t, tb.hosts[0]), "vxbridge_peer_conflicts_total", nil)

	evil := tb.attacker(t)
	// The attacker holds host t3 meanwhile: its plugin is frozen (so it
	// does not remove what the attacker writes in its name) and the
	// attacker writes with its identity.
	thaw := freeze(t, tb.hosts[2])
	tb.forgeRecords(t, evil)
	tb.requireRefusalsShown(t, conflictsBefore)
	thaw()
	tb.sendRawFrames(t, evil)

	time.Sleep(3 * trustReconcile) // every host's reconciler compared its devices with the records meanwhile
	if after := tb.snapshot(t); after != before {
		t.Errorf("tables, addresses or gateway answers changed by the attack:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	tb.pingAll(t)
	// The refused records stay reported until the operator deletes them
	// (host t3 would remove those in its name at its next full round). A
	// host's own copy goes first: a network record deleted while its copy
	// is still there is not believed, and readers look at the copy again
	// only when the network record changes or is listed again.
	prefix := fmt.Sprintf("/vxbridge/net/%d/", xVNI)
	for _, key := range []string{"/vxbridge/endpoints/t3/evil2", prefix + "members/tz", prefix + "eps/tz/", prefix + "eps/t3/evil2",
		prefix + "eps/t3/gw"} {
		if out, err := tb.etcdctl(tb.ul.NetNS(), "root:r00t-pw", "del", "--prefix", key); err != nil {
			t.Fatalf("root: etcdctl del %s: %v %s", key, err, out)
		}
	}
	for _, h := range tb.hosts {
		requireNoLeaks(t, h, 15*time.Second)
	}
}

func newTrustBed(t *testing.T) *trustBed {
	t.Helper()
	m := &multiHost{t: t, ul: testbed.NewUnderlay(t), vteps: map[*testbed.Host]string{}}
	m.etcdURL = "https://" + m.ul.IP + ":2379"
	m.etcdDir = t.TempDir()
	tb := &trustBed{multiHost: m, certs: etcdtest.WriteCerts(t, t.TempDir(), m.ul.IP), passwords: map[string]string{},
		ids: map[*testbed.Host]string{}}
	tb.rootPW = filepath.Join(m.etcdDir, "root.pw")
	if err := os.WriteFile(tb.rootPW, []byte("r00t-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m.etcd = m.ul.NetNS().Start(t, filepath.Join(m.etcdDir, "etcd.log"), "etcd",
		"--name", "ul", "--data-dir", filepath.Join(m.etcdDir, "data"),
		"--listen-client-urls", m.etcdURL, "--advertise-client-urls", m.etcdURL,
		"--cert-file", tb.certs.ServerCert, "--key-file", tb.certs.ServerKey,
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "ul=http://127.0.0.1:2380", "--log-level", "warn")
	testbed.WaitFor(t, 15*time.Second, func() error {
		_, err := tb.etcdctl(m.ul.NetNS(), "", "endpoint", "health")
		return err
	})
	return tb
}

// etcdctl runs etcdctl in ns over TLS, as user ("user:password"; "": none).
func (tb *trustBed) etcdctl(ns *testbed.NetNS, user string, args ...string) (string, error) {
	base := []string{"--endpoints", tb.etcdURL, "--cacert", tb.certs.CA, "--command-timeout", "3s"}
	if user != "" {
		base = append(base, "--user", user)
	}
	return ns.TryExec("etcdctl", append(base, args...)...)
}

var addHostPassword = regexp.MustCompile(`printf '%s\\n' '([^']+)' > `)

// addHost gives host id its identity (the first one also turns etcd's
// auth on), as an operator would, and starts its plugin with it.
func (tb *trustBed) addHost(t *testing.T, id string) {
	t.Helper()
	args := []string{"cluster", "add-host", "--host-id", id, "--etcd-endpoints", tb.etcdURL, "--etcd-ca", tb.certs.CA,
		"--etcd-password-file", tb.rootPW}
	if len(tb.hosts) == 0 {
		args = append(args, "--enable-auth")
	}
	out := tb.ul.NetNS().Exec(t, pluginBin, args...)
	m := addHostPassword.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("add-host printed no password:\n%s", out)
	}
	tb.passwords[id] = m[1]
	h := testbed.NewHost(t, testbed.HostOptions{Name: id})
	tb.vteps[h] = tb.ul.Attach(t, h)
	h.ImportImage(t)
	state := h.PluginStateDir()
	pwFile := filepath.Join(state, "etcd-password")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	for file, content := range map[string]string{filepath.Join(state, "host-id"): id, pwFile: m[1]} {
		if err := os.WriteFile(file, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h.StartPlugin(t, pluginBin, "--etcd-endpoints", tb.etcdURL, "--etcd-ca", tb.certs.CA,
		"--etcd-username", "vxbridge-host-"+id, "--etcd-password-file", pwFile,
		"--vtep-interface", testbed.UnderlayHostLink, "--vtep-cidr", "203.0.113.0/24",
		"--host-ttl", trustTTL.String(), "--reconcile-interval", trustReconcile.String(), "--metrics-listen", metricsAddr)
	tb.hosts = append(tb.hosts, h)
	tb.ids[h] = id
}

// snapshot is what the attack must not change: every host's FDB and
// neighbour entries, every container's addresses and MAC, and the MAC each
// container's gateway answers ARP with.
func (tb *trustBed) snapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, h := range tb.hosts {
		fdb, neigh := tables(t, h)
		fmt.Fprintf(&b, "%s fdb %v\n%s neigh %v\n", h.Name, fdb, h.Name, neigh)
	}
	for _, c := range tb.cs {
		fmt.Fprintf(&b, "%s %s %s %s gateway at %s\n", c.name, c.ip4, c.ip6, containerMAC(t, c.h, c.name), gatewayMAC(t, c))
	}
	return b.String()
}

var arpReply = regexp.MustCompile(`reply from \S+ \[([0-9a-fA-F:]{17})\]`)

// gatewayMAC is the MAC the container's gateway answers ARP with.
func gatewayMAC(t *testing.T, c ctr) string {
	t.Helper()
	gw := strings.TrimSuffix(xSubnet4, "0/24") + "1"
	out, err := c.h.Docker("exec", c.name, "busybox", "arping", "-c", "1", "-w", "2", "-I", "eth0", gw)
	if m := arpReply.FindStringSubmatch(out); m != nil {
		return strings.ToLower(m[1])
	}
	t.Fatalf("%s: no ARP answer from its gateway %s: %v\n%s", c.name, gw, err, out)
	return ""
}

// clusterConflicts are the refused records host h's status lists.
func clusterConflicts(t *testing.T, h *testbed.Host) []status.Conflict {
	t.Helper()
	rep := statusJSON(t, h, "")
	if rep.Cluster == nil {
		t.Fatalf("%s: status has no cluster part", h.Name)
	}
	return rep.Cluster.Conflicts
}
