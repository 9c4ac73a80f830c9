package e2e

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/status"
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

// execIn runs a command on host h, in the plugin's network namespace ns
// ("": the host's own namespace).
func execIn(h *testbed.Host, ns, name string, args ...string) (string, error) {
	if ns == "" {
		return h.TryExec(name, args...)
	}
	return testbed.ExecAt(filepath.Join(h.PluginNetNSDir(), ns), name, args...)
}

// networkNS is the plugin's namespace of docker network name on h ("": the
// network lives in the host's namespace), from the plugin's status.
func networkNS(t *testing.T, h *testbed.Host, name string) string {
	t.Helper()
	id := strings.TrimSpace(h.MustDocker(t, "network", "inspect", "-f", "{{.Id}}", name))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := status.Fetch(ctx, h.PluginSocket())
	if err != nil {
		t.Fatalf("%s: plugin status: %v", h.Name, err)
	}
	for _, n := range r.Networks {
		if n.ID == id {
			return n.NetNS
		}
	}
	t.Fatalf("%s: the plugin has no network %s (%s)", h.Name, name, id)
	return ""
}

// mustExecIn is execIn failing the test on an error.
func mustExecIn(t *testing.T, h *testbed.Host, ns, name string, args ...string) string {
	t.Helper()
	out, err := execIn(h, ns, name, args...)
	if err != nil {
		t.Fatalf("%s (netns %q): %s %s: %v: %s", h.Name, ns, name, strings.Join(args, " "), err, out)
	}
	return out
}

// linkState lists the links of the host's namespace by name, with the
// detailed line (`ip -d -o link show`) that holds the kind and alias, and
// those of the plugin's network namespaces as "<netns>/<name>".
func linkState(t *testing.T, h *testbed.Host) map[string]string {
	t.Helper()
	links := map[string]string{}
	addLinks(links, "", h.Exec(t, "ip", "-d", "-o", "link", "show"))
	for _, ns := range pluginNamespaces(t, h) {
		addLinks(links, ns+"/", mustExecIn(t, h, ns, "ip", "-d", "-o", "link", "show"))
	}
	return links
}

// pluginNamespaces lists the plugin's network namespaces on h.
func pluginNamespaces(t testing.TB, h *testbed.Host) []string {
	t.Helper()
	names, err := h.PluginNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// xhostNS is the namespace of the host's one cross-host network, where its
// VXLAN device is ("" when it has none: an older layout, in the host's).
func xhostNS(h *testbed.Host) (string, error) {
	names, err := h.PluginNamespaces()
	switch {
	case err != nil:
		return "", err
	case len(names) > 1:
		return "", fmt.Errorf("%s: %d network namespaces (%v), want one cross-host network", h.Name, len(names), names)
	case len(names) == 1:
		return names[0], nil
	}
	return "", nil
}

// xExec runs a command where the host's cross-host network lives.
func xExec(h *testbed.Host, name string, args ...string) (string, error) {
	ns, err := xhostNS(h)
	if err != nil {
		return "", err
	}
	return execIn(h, ns, name, args...)
}

func mustXExec(t *testing.T, h *testbed.Host, name string, args ...string) string {
	t.Helper()
	out, err := xExec(h, name, args...)
	if err != nil {
		t.Fatalf("%s: %s %s: %v: %s", h.Name, name, strings.Join(args, " "), err, out)
	}
	return out
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
