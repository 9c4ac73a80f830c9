package e2e

import (
	"strings"
	"testing"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// TestNFTablesBackend runs the current daemon with --firewall-backend=
// nftables, where docker makes no iptables chain at all: vxbridge must find
// that mode, keep its rules in its own nftables tables, and give the
// guarantees of iptables mode: published ports from outside, the host,
// loopback and hairpin; isolation from docker's bridge both ways; an
// operator's drop, in a table of theirs where docker's documentation puts
// it, deciding first; nothing left behind.
func TestNFTablesBackend(t *testing.T) {
	requirePlugin(t)
	if testbed.SelectedDaemon(t).Kind != testbed.DaemonCurrent {
		t.Skip("docker 20.10 has no nftables firewall backend")
	}
	tool := testbed.BuildStaticGo(t, "github.com/vxbridge/vxbridge/e2e/porttool")
	h := testbed.NewHost(t, testbed.HostOptions{Name: "nft", FirewallBackend: testbed.FirewallNFTables})
	h.ImportImageSpec(t, testbed.ImageSpec{Tag: portsImage, Files: map[string]string{"/bin/porttool": tool}})
	s := &portsHost{h: h, tool: tool, inet: testbed.NewInternet(t, h)}
	h.StartPlugin(t, pluginBin)
	if rep := statusJSON(t, h, h.PluginSocket()); rep.Firewall.Backend != "nftables" {
		t.Fatalf("status: firewall backend %q (%s), want nftables", rep.Firewall.Backend, rep.Firewall.Reason)
	}
	iptablesBefore := testbed.IPTablesSave(t, h)
	createNetwork(t, h, "nv", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName,
		"--subnet", "10.83.1.0/24", "--gateway", "10.83.1.1", "--ipv6", "--subnet", "fd83:1::/64", "--gateway", "fd83:1::1")
	s.serve(t, "web", "nv", "-p", "8080:80", "-p", "5353:53/udp")
	s.client(t, "near", "nv")
	s.serve(t, "dock", "bridge") // docker's default bridge, docker0

	s.answered(t, "internet", "tcp", hostAddr+":8080", "web:80 192.0.2.1")
	s.answered(t, "internet", "udp", hostAddr+":5353", "web:53 192.0.2.1")
	s.answered(t, "internet", "tcp", "["+hostAddr6+"]:8080", "web:80 2001:db8:2::1")
	s.answered(t, "host", "tcp", hostAddr+":8080", "web:80 "+hostAddr)
	s.answered(t, "host", "tcp", "127.0.0.1:8080", "web:80 10.83.1.1") // vxbridge's relay
	s.answered(t, "near", "tcp", hostAddr+":8080", "web:80 10.83.1.1") // hairpin
	s.answered(t, "web", "tcp", hostAddr+":8080", "web:80 10.83.1.1")  // its own port
	s.answered(t, "dock", "tcp", hostAddr+":8080", "web:80")

	// Isolation from docker0 both ways, with positive controls on each side.
	webIP, dockIP := containerIP(t, h, "web", "nv", false), containerIP(t, h, "dock", "bridge", false)
	s.answered(t, "near", "tcp", webIP+":81", "web:81")
	s.answered(t, "dock", "tcp", dockIP+":81", "dock:81")
	s.unanswered(t, "dock", "tcp", webIP+":81")
	s.unanswered(t, "web", "tcp", dockIP+":81")
	s.unanswered(t, "internet", "tcp", webIP+":81") // routed straight in

	// An operator's drop, in a table of their own at docker's priority.
	h.Exec(t, "nft", "add table ip operator")
	h.Exec(t, "nft", "add chain ip operator opfwd { type filter hook forward priority filter ; policy accept ; }")
	h.Exec(t, "nft", "add rule ip operator opfwd ip daddr "+webIP+" tcp dport 80 drop")
	s.unanswered(t, "internet", "tcp", hostAddr+":8080")
	h.Exec(t, "nft", "delete table ip operator")
	s.answered(t, "internet", "tcp", hostAddr+":8080", "web:80")

	t.Logf("nft list table ip vxbridge:\n%s", h.Exec(t, "nft", "list", "table", "ip", "vxbridge"))
	if after := testbed.IPTablesSave(t, h); after != iptablesBefore {
		t.Errorf("vxbridge wrote iptables rules in nftables mode:\n%s", lineDiff(iptablesBefore, after))
	}
	removeContainers(t, h, "web", "near", "dock")
	h.MustDocker(t, "network", "rm", "nv")
	if tables := h.Exec(t, "nft", "list", "tables"); strings.Contains(tables, "vxbridge") {
		t.Errorf("vxbridge's tables stayed after its last network went:\n%s", tables)
	}
}
