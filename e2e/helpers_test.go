package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testbed"
)

// createNetwork runs `docker network create ARGS... NAME` and removes the
// network when the test ends (after its containers, which are made later
// and so removed earlier). Removing it must succeed unless the test already
// did.
func createNetwork(t *testing.T, h *testbed.Host, name string, args ...string) {
	t.Helper()
	h.MustDocker(t, append(append([]string{"network", "create"}, args...), name)...)
	t.Cleanup(func() {
		if _, err := h.Docker("network", "inspect", name); err != nil {
			return // the test removed it
		}
		if out, err := h.Docker("network", "rm", name); err != nil {
			t.Errorf("docker network rm %s: %v\n%s", name, err, out)
		}
	})
}

// runContainer starts `sleep 300` detached in the test image, named name,
// on network, and removes it when the test ends.
func runContainer(t *testing.T, h *testbed.Host, name, network string, extra ...string) {
	t.Helper()
	args := append([]string{"run", "-d", "--name", name, "--network", network}, extra...)
	args = append(args, testbed.Image, "sleep", "300")
	t.Cleanup(func() { removeContainers(t, h, name) })
	h.MustDocker(t, args...)
}

// removeContainers removes containers, accepting ones already gone.
func removeContainers(t *testing.T, h *testbed.Host, names ...string) {
	t.Helper()
	out, err := h.Docker(append([]string{"rm", "-f"}, names...)...)
	if err != nil && !strings.Contains(out, "No such container") {
		t.Errorf("docker rm -f %s: %v\n%s", strings.Join(names, " "), err, out)
	}
}

// containerIP is the container's IPv4 (or, with v6, IPv6) address on network.
func containerIP(t *testing.T, h *testbed.Host, name, network string, v6 bool) string {
	t.Helper()
	field := "IPAddress"
	if v6 {
		field = "GlobalIPv6Address"
	}
	format := fmt.Sprintf(`{{with index .NetworkSettings.Networks %q}}{{.%s}}{{end}}`, network, field)
	ip := strings.TrimSpace(h.MustDocker(t, "inspect", "-f", format, name))
	if net.ParseIP(ip) == nil {
		t.Fatalf("container %s has no %s on %s (inspect says %q)", name, field, network, ip)
	}
	return ip
}

// ping sends one echo request from the container to addr (a name or an IP).
func ping(h *testbed.Host, from, addr string) error {
	tool := "ping"
	if strings.Contains(addr, ":") {
		tool = "ping6"
	}
	out, err := h.Docker("exec", from, tool, "-c1", "-W2", addr)
	if err != nil {
		return fmt.Errorf("%s -> %s: %v\n%s", from, addr, err, strings.TrimSpace(out))
	}
	return nil
}

// mustPing requires one ping to pass now: the path is expected up already.
func mustPing(t *testing.T, h *testbed.Host, from, addr string) {
	t.Helper()
	if err := ping(h, from, addr); err != nil {
		t.Errorf("ping failed: %v", err)
	}
}

// waitPing allows the first contact of a fresh path up to 10 s (neighbour
// resolution, IPv6 DAD on the gateway).
func waitPing(t *testing.T, h *testbed.Host, from, addr string) {
	t.Helper()
	testbed.WaitFor(t, 10*time.Second, func() error { return ping(h, from, addr) })
}

// mustNotPing requires that the ping fails. Pair it with a positive control
// so a broken container cannot make it pass.
func mustNotPing(t *testing.T, h *testbed.Host, from, addr string) {
	t.Helper()
	if err := ping(h, from, addr); err == nil {
		t.Errorf("%s reached %s, want it blocked", from, addr)
	}
}

// linkState lists the links of the host's namespace by name, with the
// detailed line (`ip -d -o link show`) that holds the kind and alias.
func linkState(t *testing.T, h *testbed.Host) map[string]string {
	t.Helper()
	links := map[string]string{}
	for _, line := range strings.Split(h.Exec(t, "ip", "-d", "-o", "link", "show"), "\n") {
		// "7: vxb-1234@if6: <...> ..." -> "vxb-1234"
		f := strings.SplitN(line, ": ", 3)
		if len(f) < 3 {
			continue
		}
		name, _, _ := strings.Cut(f[1], "@")
		links[name] = line
	}
	return links
}

// pluginLinks are the links that look like the plugin's: named vxb-* or
// carrying a vxbridge alias.
func pluginLinks(links map[string]string) []string {
	var out []string
	for name, line := range links {
		if strings.HasPrefix(name, "vxb-") || strings.Contains(line, "alias vxbridge") {
			out = append(out, name)
		}
	}
	return out
}
