package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// portsImage is busybox plus porttool (e2e/porttool), which answers TCP and
// UDP with "NAME:PORT SOURCE" and asks as a client.
const portsImage = "vxtest/ports:latest"

// portsHost is a host of its own for published ports: dockerd, vxbridge,
// and the internet namespace, which stands for a second machine (it routes
// to the host's address 192.0.2.2 and has no route to container subnets).
type portsHost struct {
	h    *testbed.Host
	inet *testbed.Internet
	tool string // porttool built for this machine (the image has its own copy)
}

const hostAddr, hostAddr6 = "192.0.2.2", "2001:db8:2::2"

func TestPorts(t *testing.T) {
	requirePlugin(t)
	tool := testbed.BuildStaticGo(t, "github.com/vxbridge/vxbridge/e2e/porttool")
	h := testbed.NewHost(t, testbed.HostOptions{Name: "ports", Debug: true})
	h.ImportImageSpec(t, testbed.ImageSpec{Tag: portsImage, Files: map[string]string{"/bin/porttool": tool}})
	s := &portsHost{h: h, tool: tool, inet: testbed.NewInternet(t, h)}
	noNetworks := testbed.IPTablesSave(t, h)
	h.StartPlugin(t, pluginBin)
	// The main network: dual stack.
	createNetwork(t, h, "pv", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName,
		"--subnet", "10.79.1.0/24", "--gateway", "10.79.1.1", "--ipv6", "--subnet", "fd79:1::/64", "--gateway", "fd79:1::1")

	for _, sc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"TCPAndUDP", s.tcpAndUDP},
		{"Ephemeral", s.ephemeral},
		{"RangesAndHostBinding", s.rangesAndHostBinding},
		{"Conflicts", s.conflicts},
		{"PluginKill9", s.pluginKill9},
		{"FlushRepaired", s.flushRepaired},
		{"DockerdRestart", s.dockerdRestart},
		{"ConntrackFlushedOnReuse", s.conntrackFlushedOnReuse},
	} {
		t.Run(sc.name, func(t *testing.T) {
			if p := h.Plugin(); p != nil && p.Exited() {
				t.Errorf("plugin exited (%v); restarting it. Log:\n%s", p.ExitErr(), p.Log())
				h.StartPlugin(t, pluginBin)
			}
			sc.fn(t)
		})
	}
	// Nothing of the scenarios is left once their networks are gone.
	h.MustDocker(t, "network", "rm", "pv")
	if after := testbed.IPTablesSave(t, h); after != noNetworks {
		t.Errorf("iptables after every network went:\n%s", lineDiff(noNetworks, after))
	}
}

// serve starts porttool answering as name on TCP 80 and 81 and UDP 53, on
// network, with extra docker run flags (-p ...); removed when the test ends.
func (s *portsHost) serve(t *testing.T, name, network string, extra ...string) {
	t.Helper()
	args := append([]string{"run", "-d", "--name", name, "--network", network}, extra...)
	args = append(args, portsImage, "porttool", "serve", "-name", name, "-tcp", "80", "-tcp", "81", "-udp", "53")
	t.Cleanup(func() { removeContainers(t, s.h, name) })
	s.h.MustDocker(t, args...)
}

// client starts an idle container to ask from.
func (s *portsHost) client(t *testing.T, name, network string) {
	t.Helper()
	t.Cleanup(func() { removeContainers(t, s.h, name) })
	s.h.MustDocker(t, "run", "-d", "--name", name, "--network", network, portsImage, "sleep", "300")
}

// ask runs `porttool ask PROTO ADDR ARGS...` from "internet", "host" or a
// container and returns the answer.
func (s *portsHost) ask(from, proto, addr string, args ...string) (string, error) {
	argv := append([]string{"ask", proto, addr, "-timeout", "2s"}, args...)
	var out string
	var err error
	switch from {
	case "internet":
		out, err = s.inet.NetNS().TryExec(s.tool, argv...)
	case "host":
		out, err = s.h.TryExec(s.tool, argv...)
	default:
		out, err = s.h.Docker(append([]string{"exec", from, "porttool"}, argv...)...)
	}
	out = strings.TrimSpace(out)
	if err != nil {
		return "", fmt.Errorf("%s -> %s %s: %v: %s", from, proto, addr, err, out)
	}
	return out, nil
}

// answered requires an answer starting with want ("web:80" or "web:80
// 192.0.2.1"), allowing a fresh path a few seconds.
func (s *portsHost) answered(t *testing.T, from, proto, addr, want string) {
	t.Helper()
	testbed.WaitFor(t, 5*time.Second, func() error {
		got, err := s.ask(from, proto, addr)
		if err != nil {
			return err
		}
		if got != want && !strings.HasPrefix(got, want+" ") {
			return testbed.Permanent(fmt.Errorf("%s -> %s %s answered %q, want %q", from, proto, addr, got, want))
		}
		return nil
	})
}

// unanswered requires that nothing answers; pair it with a positive control.
func (s *portsHost) unanswered(t *testing.T, from, proto, addr string) {
	t.Helper()
	if got, err := s.ask(from, proto, addr); err == nil {
		t.Errorf("%s -> %s %s answered %q, want no answer", from, proto, addr, got)
	}
}

// endpointPorts asks the plugin (EndpointOperInfo, as docker does) for the
// published ports of container's endpoint on network.
func (s *portsHost) endpointPorts(t *testing.T, container, network string) []string {
	t.Helper()
	netID := strings.TrimSpace(s.h.MustDocker(t, "network", "inspect", "-f", "{{.Id}}", network))
	epID := strings.TrimSpace(s.h.MustDocker(t, "inspect", "-f",
		fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).EndpointID}}`, network), container))
	code, body, err := testbed.PluginCall(s.h.PluginSocket(), "/NetworkDriver.EndpointOperInfo",
		fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q}`, netID, epID))
	if err != nil || code != 200 {
		t.Fatalf("EndpointOperInfo: %d %v %s", code, err, body)
	}
	var info struct{ Value map[string]string }
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatalf("EndpointOperInfo answer %q: %v", body, err)
	}
	if info.Value["vxbridge.ports"] == "" {
		return nil
	}
	return strings.Split(info.Value["vxbridge.ports"], ", ")
}

// hostPort is the host port of the mapping of container port/proto on
// host address all (0.0.0.0 or [::]) in ports as EndpointOperInfo lists them.
func hostPort(t *testing.T, ports []string, all, port string) string {
	t.Helper()
	for _, p := range ports {
		host, target, _ := strings.Cut(p, "->")
		if strings.HasPrefix(host, all+":") && target == port {
			return strings.TrimPrefix(host, all+":")
		}
	}
	t.Fatalf("no mapping of %s on %s in %q", port, all, ports)
	return ""
}

func sortedLines(s string) []string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	slices.Sort(l)
	return l
}

// (1) A TCP and a UDP service, reached from the other machine, from the
// host itself, from containers (hairpin), over IPv4 and IPv6; DOCKER-USER
// still decides first; nothing is left when the container goes.
func (s *portsHost) tcpAndUDP(t *testing.T) {
	h := s.h
	before := testbed.IPTablesSave(t, h)
	createNetwork(t, h, "pother", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.79.2.0/24")
	s.serve(t, "web", "pv", "-p", "8080:80", "-p", "5353:53/udp")
	s.client(t, "near", "pv")     // same network
	s.client(t, "far", "pother")  // another vxbridge network
	s.client(t, "dock", "bridge") // docker's own default bridge

	s.answered(t, "internet", "tcp", hostAddr+":8080", "web:80 192.0.2.1") // the client's address is kept
	s.answered(t, "internet", "udp", hostAddr+":5353", "web:53 192.0.2.1")
	s.answered(t, "internet", "tcp", "["+hostAddr6+"]:8080", "web:80 2001:db8:2::1")
	s.answered(t, "internet", "udp", "["+hostAddr6+"]:5353", "web:53 2001:db8:2::1")
	s.answered(t, "host", "tcp", hostAddr+":8080", "web:80 "+hostAddr)
	s.answered(t, "host", "udp", hostAddr+":5353", "web:53 "+hostAddr)
	// Loopback goes through vxbridge's relay, from the gateway.
	s.answered(t, "host", "tcp", "127.0.0.1:8080", "web:80 10.79.1.1")
	s.answered(t, "host", "udp", "127.0.0.1:5353", "web:53 10.79.1.1")
	s.answered(t, "host", "tcp", "[::1]:8080", "web:80 fd79:1::1")
	// Hairpin: masqueraded, so the answer comes back the same way.
	s.answered(t, "near", "tcp", hostAddr+":8080", "web:80 10.79.1.1")
	s.answered(t, "near", "udp", hostAddr+":5353", "web:53 10.79.1.1")
	s.answered(t, "web", "tcp", hostAddr+":8080", "web:80 10.79.1.1") // its own port
	s.answered(t, "far", "tcp", hostAddr+":8080", "web:80")
	s.answered(t, "dock", "tcp", hostAddr+":8080", "web:80")
	// Unpublished ports stay closed, also to the other machine routing
	// straight to the container.
	s.unanswered(t, "internet", "tcp", hostAddr+":81")

	// Operators' rules in DOCKER-USER win.
	webIP := containerIP(t, h, "web", "pv", false)
	drop := []string{"-w", "-I", "DOCKER-USER", "-d", webIP, "-p", "tcp", "--dport", "80", "-j", "DROP"}
	h.Exec(t, "iptables", drop...)
	s.unanswered(t, "internet", "tcp", hostAddr+":8080")
	drop[1] = "-D"
	h.Exec(t, "iptables", drop...)
	s.answered(t, "internet", "tcp", hostAddr+":8080", "web:80")

	removeContainers(t, h, "web", "near", "far", "dock")
	h.MustDocker(t, "network", "rm", "pother")
	if after := testbed.IPTablesSave(t, h); after != before {
		t.Errorf("iptables after the containers went:\n%s", lineDiff(before, after))
	}
	s.unanswered(t, "host", "tcp", "127.0.0.1:8080")
}

// (2) -p PORT, -P: host ports from the kernel's ephemeral range, the same
// for IPv4 and IPv6, reported by EndpointOperInfo (docker does not show
// them: it reads published ports only from its own drivers).
func (s *portsHost) ephemeral(t *testing.T) {
	h := s.h
	s.serve(t, "eph", "pv", "-p", "80", "-p", "53/udp", "--expose", "81", "-P")
	ports := s.endpointPorts(t, "eph", "pv")
	t.Logf("EndpointOperInfo vxbridge.ports: %q", ports)
	for _, args := range [][]string{{"port", "eph"}, {"ps", "--filter", "name=eph", "--format", "{{.Ports}}"},
		{"inspect", "-f", "{{json .NetworkSettings.Ports}}", "eph"}} {
		out, _ := h.Docker(args...)
		t.Logf("docker %s shows %q", strings.Join(args, " "), strings.TrimSpace(out))
	}
	if len(ports) != 6 {
		t.Fatalf("want 80/tcp, 81/tcp and 53/udp on 0.0.0.0 and [::], got %q", ports)
	}
	f := strings.Fields(h.Exec(t, "cat", "/proc/sys/net/ipv4/ip_local_port_range"))
	lo, _ := strconv.Atoi(f[0])
	hi, _ := strconv.Atoi(f[1])
	for _, c := range []struct{ proto, port, want string }{{"tcp", "80/tcp", "eph:80"}, {"tcp", "81/tcp", "eph:81"}, {"udp", "53/udp", "eph:53"}} {
		p4, p6 := hostPort(t, ports, "0.0.0.0", c.port), hostPort(t, ports, "[::]", c.port)
		if n, _ := strconv.Atoi(p4); p4 != p6 || n < lo || n > hi {
			t.Errorf("%s: host ports %s and %s, want one port of %d-%d", c.port, p4, p6, lo, hi)
		}
		s.answered(t, "internet", c.proto, hostAddr+":"+p4, c.want)
		s.answered(t, "internet", c.proto, "["+hostAddr6+"]:"+p6, c.want)
	}
}

// (3) Port ranges; a range skips the port a process holds; the network's
// host_binding_ipv4 is the default host address (and then no IPv6).
func (s *portsHost) rangesAndHostBinding(t *testing.T) {
	h := s.h
	p := h.Start(t, "holder-9100.log", s.tool, "serve", "-name", "holder", "-tcp", "9100")
	defer p.Stop()
	testbed.WaitFor(t, 5*time.Second, func() error { _, err := s.ask("host", "tcp", "127.0.0.1:9100"); return err })
	s.serve(t, "rng", "pv", "-p", "9000-9001:80-81", "-p", "9100-9102:80")
	s.answered(t, "internet", "tcp", hostAddr+":9000", "rng:80")
	s.answered(t, "internet", "tcp", hostAddr+":9001", "rng:81")
	s.answered(t, "internet", "tcp", hostAddr+":9101", "rng:80")
	s.answered(t, "host", "tcp", "127.0.0.1:9100", "holder:9100") // untouched

	createNetwork(t, h, "pbind", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.79.3.0/24",
		"--ipv6", "--subnet", "fd79:3::/64", "-o", "com.docker.network.bridge.host_binding_ipv4="+hostAddr)
	s.serve(t, "bound", "pbind", "-p", "8082:80", "-p", "127.0.0.1:8083:80")
	got, want := s.endpointPorts(t, "bound", "pbind"), []string{"127.0.0.1:8083->80/tcp", hostAddr + ":8082->80/tcp"}
	if slices.Sort(got); !slices.Equal(got, want) {
		t.Errorf("published %q, want %q", got, want)
	}
	s.answered(t, "internet", "tcp", hostAddr+":8082", "bound:80")
	s.answered(t, "host", "tcp", "127.0.0.1:8083", "bound:80")
	s.unanswered(t, "host", "tcp", "127.0.0.1:8082")
	s.unanswered(t, "internet", "tcp", "["+hostAddr6+"]:8082")
	s.unanswered(t, "internet", "tcp", hostAddr+":8083") // loopback only
	removeContainers(t, h, "bound")
	h.MustDocker(t, "network", "rm", "pbind")
}

// (4) A host port held by another container (of any vxbridge network) or
// by a process is refused in docker's words, and the refusal leaves
// nothing behind.
func (s *portsHost) conflicts(t *testing.T) {
	h := s.h
	createNetwork(t, h, "pconf", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.79.4.0/24")
	s.serve(t, "owner", "pv", "-p", "8181:80")
	s.answered(t, "internet", "tcp", hostAddr+":8181", "owner:80")
	p := h.Start(t, "holder-8282.log", s.tool, "serve", "-name", "holder", "-tcp", "8282")
	defer p.Stop()
	testbed.WaitFor(t, 5*time.Second, func() error { _, err := s.ask("host", "tcp", "127.0.0.1:8282"); return err })

	t.Cleanup(func() { removeContainers(t, h, "intruder") })
	for _, c := range []struct{ publish, why string }{
		{"8181:80", "published by endpoint"},
		{hostAddr + ":8181:80", "published by endpoint"},
		{"8282:80", "another process"},
	} {
		before := testbed.IPTablesSave(t, h)
		out, err := h.Docker("run", "-d", "--name", "intruder", "--network", "pconf", "-p", c.publish, portsImage, "sleep", "300")
		t.Logf("-p %s: %s", c.publish, strings.TrimSpace(out))
		if err == nil {
			t.Errorf("-p %s: docker run succeeded:\n%s", c.publish, out)
		} else if !strings.Contains(out, "port is already allocated") || !strings.Contains(out, c.why) {
			t.Errorf("-p %s: refusal does not say \"port is already allocated\" (%s):\n%s", c.publish, c.why, out)
		}
		removeContainers(t, h, "intruder")
		if after := testbed.IPTablesSave(t, h); after != before {
			t.Errorf("-p %s: the refusal changed iptables:\n%s", c.publish, lineDiff(before, after))
		}
	}
	s.answered(t, "internet", "tcp", hostAddr+":8181", "owner:80")
	s.answered(t, "host", "tcp", "127.0.0.1:8282", "holder:8282")
	// The owner's port is held: no process can take it.
	if out, err := h.TryExec(s.tool, "serve", "-check", "-name", "x", "-tcp", "8181"); err == nil || !strings.Contains(out, "address already in use") {
		t.Errorf("a process could listen on the published port 8181: %v\n%s", err, out)
	}
}

// (5) kill -9 of the plugin: the kernel keeps carrying the published port;
// the restarted plugin holds and relays it again.
func (s *portsHost) pluginKill9(t *testing.T) {
	h := s.h
	s.serve(t, "k9", "pv", "-p", "8383:80", "-p", "5383:53/udp")
	s.answered(t, "host", "tcp", "127.0.0.1:8383", "k9:80")
	if err := h.Plugin().Kill9(); err != nil {
		t.Fatal(err)
	}
	s.answered(t, "internet", "tcp", hostAddr+":8383", "k9:80")
	s.answered(t, "internet", "udp", hostAddr+":5383", "k9:53")
	if _, err := s.ask("host", "tcp", "127.0.0.1:8383"); err != nil {
		t.Logf("while the plugin is down, loopback is not relayed (as documented): %v", err)
	}
	h.StartPlugin(t, pluginBin)
	s.answered(t, "host", "tcp", "127.0.0.1:8383", "k9:80")
	s.answered(t, "internet", "tcp", hostAddr+":8383", "k9:80")
	if got := s.endpointPorts(t, "k9", "pv"); len(got) != 4 {
		t.Errorf("after the restart the plugin reports %q", got)
	}
}

// (6) Someone flushes vxbridge's chains: the rules are back within
// seconds (nf_tables events, else --reconcile-interval).
func (s *portsHost) flushRepaired(t *testing.T) {
	h := s.h
	s.serve(t, "fl", "pv", "-p", "8484:80")
	s.answered(t, "internet", "tcp", hostAddr+":8484", "fl:80")
	want := sortedLines(testbed.IPTablesSave(t, h))
	h.Exec(t, "iptables", "-w", "-t", "nat", "-F", "VXBRIDGE-DNAT")
	h.Exec(t, "iptables", "-w", "-t", "nat", "-D", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "VXBRIDGE-DNAT")
	h.Exec(t, "iptables", "-w", "-F", "VXBRIDGE-FORWARD")
	h.Exec(t, "ip6tables", "-w", "-t", "nat", "-F", "VXBRIDGE-DNAT")
	// Until the rules are back the relay answers (from the gateway).
	start := time.Now()
	testbed.WaitFor(t, 8*time.Second, func() error {
		if got := sortedLines(testbed.IPTablesSave(t, h)); !slices.Equal(got, want) {
			return fmt.Errorf("not repaired:\n%s", lineDiff(strings.Join(want, "\n"), strings.Join(got, "\n")))
		}
		return nil
	})
	t.Logf("rules repaired %v after the flush", time.Since(start).Round(100*time.Millisecond))
	s.answered(t, "internet", "tcp", hostAddr+":8484", "fl:80 192.0.2.1") // DNAT'ed again
	s.answered(t, "internet", "tcp", "["+hostAddr6+"]:8484", "fl:80 2001:db8:2::1")
}

// (7) dockerd restarts and rewrites its chains. Without live-restore it
// stops the container (docker revokes the port) and starts it again
// (--restart always): the same host port is published again, behind
// DOCKER-USER as before.
func (s *portsHost) dockerdRestart(t *testing.T) {
	h := s.h
	s.serve(t, "rs", "pv", "--restart", "always", "-p", "8585:80", "-p", "5585:53/udp")
	s.answered(t, "internet", "tcp", hostAddr+":8585", "rs:80")
	h.StopDockerd(t)
	h.StartDockerd(t)
	testbed.WaitFor(t, 30*time.Second, func() error {
		_, err := s.ask("internet", "tcp", hostAddr+":8585")
		return err
	})
	s.answered(t, "internet", "udp", hostAddr+":5585", "rs:53")
	s.answered(t, "host", "tcp", "127.0.0.1:8585", "rs:80")
	forward := strings.Split(strings.TrimSpace(h.Exec(t, "iptables", "-w", "-S", "FORWARD")), "\n")
	if len(forward) < 3 || forward[1] != "-A FORWARD -j DOCKER-USER" || forward[2] != "-A FORWARD -j VXBRIDGE-FORWARD" {
		t.Errorf("FORWARD after the restart, want DOCKER-USER then vxbridge's jump first:\n%s", strings.Join(forward, "\n"))
	}
}

// (8) A removed mapping's conntrack entries go with it: a UDP flow that
// keeps coming from the same source reaches the new container publishing
// the port, not the dead one.
func (s *portsHost) conntrackFlushedOnReuse(t *testing.T) {
	h := s.h
	s.serve(t, "u1", "pv", "-p", "5686:53/udp")
	askSame := func() (string, error) { return s.ask("internet", "udp", hostAddr+":5686", "-sport", "40686") }
	testbed.WaitFor(t, 5*time.Second, func() error {
		got, err := askSame()
		if err == nil && !strings.HasPrefix(got, "u1:53") {
			err = testbed.Permanent(fmt.Errorf("answer %q, want u1", got))
		}
		return err
	})
	ip1 := containerIP(t, h, "u1", "pv", false)
	removeContainers(t, h, "u1")
	s.serve(t, "u2", "pv", "-p", "5686:53/udp")
	if ip2 := containerIP(t, h, "u2", "pv", false); ip2 == ip1 {
		t.Logf("u2 got u1's address %s: a stale entry would reach it too, so this proves less", ip1)
	}
	var last string
	for range 3 {
		got, err := askSame()
		if err == nil && strings.HasPrefix(got, "u2:53") {
			return
		}
		last = fmt.Sprint(got, err)
	}
	t.Errorf("the flow from port 40686 does not reach u2 (a stale conntrack entry?): %s", last)
}
