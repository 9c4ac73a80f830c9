package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

const (
	optEnableIPv4 = "com.docker.network.enable_ipv4"
	optEnableIPv6 = "com.docker.network.enable_ipv6"
)

// Docker's -o com.docker.network.enable_ipv6/enable_ipv4 mean what they mean
// to docker's bridge driver. Docker 28+ reads them itself; 20.10 ignores
// them, so there vxbridge takes them with --ipv6 and refuses them, naming
// --ipv6, when docker did otherwise. Options of docker's bridge driver that
// vxbridge does not implement are refused saying why.
func (s *singleHost) familyOptions(t *testing.T) {
	h := s.h
	// Both daemons: the option beside --ipv6.
	s.vxNet(t, "vxn20", "10.77.20.0/24", "--ipv6", "--subnet", "fd77:20::/64", "-o", optEnableIPv6+"=true")
	s.checkIPv6(t, "n20", "vxn20", "fd77:20::/64")

	if !h.Daemon().IsCurrent() {
		out, err := h.Docker("network", "create", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName,
			"--subnet", "10.77.21.0/24", "-o", optEnableIPv6+"=true", "vxn21")
		if err == nil || !strings.Contains(out, "--ipv6") {
			h.Docker("network", "rm", "vxn21")
			t.Fatalf("docker 20.10, -o %s=true without --ipv6: want a refusal naming --ipv6, got err=%v:\n%s", optEnableIPv6, err, out)
		}
		return
	}
	// The option alone, as docker's bridge driver takes it.
	s.vxNet(t, "vxn21", "10.77.21.0/24", "--subnet", "fd77:21::/64", "-o", optEnableIPv6+"=true")
	s.checkIPv6(t, "n21", "vxn21", "fd77:21::/64")
	// IPv6 only.
	createNetwork(t, h, "vxn22", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName,
		"--subnet", "fd77:22::/64", "-o", optEnableIPv4+"=false", "-o", optEnableIPv6+"=true")
	runContainer(t, h, "n22a", "vxn22")
	// API 1.56 shows no address as "invalid IP", older APIs as "".
	if v4 := strings.TrimSpace(h.MustDocker(t, "inspect", "-f",
		`{{with index .NetworkSettings.Networks "vxn22"}}{{.IPAddress}}{{end}}`, "n22a")); net.ParseIP(v4) != nil {
		t.Errorf("container on an IPv6-only network has IPv4 address %s", v4)
	}
	s.checkIPv6(t, "n22", "vxn22", "fd77:22::/64")
}

// checkIPv6 runs two containers (prefix+"a", prefix+"b"; a may exist) on
// network and requires each an address in subnet and ping between them.
func (s *singleHost) checkIPv6(t *testing.T, prefix, network, subnet string) {
	t.Helper()
	h := s.h
	if _, err := h.Docker("inspect", prefix+"a"); err != nil {
		runContainer(t, h, prefix+"a", network)
	}
	runContainer(t, h, prefix+"b", network)
	if got := strings.TrimSpace(h.MustDocker(t, "network", "inspect", "-f", "{{.EnableIPv6}}", network)); got != "true" {
		t.Errorf("network %s: EnableIPv6 = %s, want true", network, got)
	}
	a, b := containerIP(t, h, prefix+"a", network, true), containerIP(t, h, prefix+"b", network, true)
	for _, ip := range []string{a, b} {
		if !strings.HasPrefix(ip, strings.TrimSuffix(subnet, ":/64")) {
			t.Errorf("IPv6 address %s is outside %s", ip, subnet)
		}
	}
	waitPing(t, h, prefix+"a", b)
}

// Options of docker's bridge driver that vxbridge does not implement: the
// value that asks for what vxbridge does is taken, another is refused saying
// why.
func (s *singleHost) foreignOptions(t *testing.T) {
	h := s.h
	const mode = "com.docker.network.bridge.gateway_mode_ipv4"
	s.vxNet(t, "vxn23", "10.77.23.0/24", "-o", mode+"=nat")
	out, err := h.Docker("network", "create", "-d", testbed.PluginName, "-o", mode+"=routed", "vxbad")
	if err == nil || !strings.Contains(out, mode) || !strings.Contains(out, "enable_ip_masquerade=false") {
		h.Docker("network", "rm", "vxbad")
		t.Errorf("-o %s=routed: want a refusal naming it and the way to no source NAT, got err=%v:\n%s", mode, err, out)
	}
}

// A daemon.json default-network-opts entry for the driver reaches vxbridge as
// the same -o options (docker 24+: 20.10 refuses the key, so current only).
func (s *singleHost) defaultNetworkOpts(t *testing.T) {
	h := s.h
	if !h.Daemon().IsCurrent() {
		t.Skip("default-network-opts needs docker 24 or later")
	}
	conf := filepath.Join(h.Dir(), "daemon.json")
	restart := func(json string) {
		t.Helper()
		if err := os.WriteFile(conf, []byte(json), 0o600); err != nil {
			t.Fatal(err)
		}
		h.StopDockerd(t)
		h.StartDockerd(t)
	}
	t.Cleanup(func() { restart("{}\n") })
	restart(`{"default-network-opts": {"` + testbed.PluginName + `": {"` + optEnableIPv6 + `": "true"}}}` + "\n")
	s.vxNet(t, "vxn24", "10.77.24.0/24", "--subnet", "fd77:24::/64")
	s.checkIPv6(t, "n24", "vxn24", "fd77:24::/64")
}
