package e2e

import (
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/ownership/mark"
)

// singleHost is one host with the vxbridge plugin and an internet namespace,
// shared by the scenarios below (dockerd startup costs seconds). Each
// scenario makes its own networks (subnets 10.77.N.0/24, names vxnN) and
// containers and removes them when it ends.
type singleHost struct {
	h    *testbed.Host
	inet *testbed.Internet
}

func TestSingleHost(t *testing.T) {
	requirePlugin(t)
	h := testbed.NewHost(t, testbed.HostOptions{Name: "h1", Debug: true})
	h.ImportImage(t)
	h.StartPlugin(t, pluginBin)
	s := &singleHost{h: h, inet: testbed.NewInternet(t, h)}

	for _, sc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"BadOption", s.badOption},
		{"PingByIPAndName", s.pingByIPAndName},
		{"DualStack", s.dualStack},
		{"Outbound", s.outbound},
		{"Isolation", s.isolation},
		{"NoICC", s.noICC},
		{"Internal", s.internal},
		{"BridgeNameAndMTU", s.bridgeNameAndMTU},
		{"PluginRestart", s.pluginRestart},
		{"NoLeaks", s.noLeaks},
		{"ParallelRuns", s.parallelRuns},
		{"DefaultIPAM", s.defaultIPAM},
		{"StaticAddresses", s.staticAddresses},
		{"RestartSameIP", s.restartSameIP},
		{"FamilyOptions", s.familyOptions},
		{"ForeignOptions", s.foreignOptions},
		{"DefaultNetworkOpts", s.defaultNetworkOpts}, // restarts dockerd
	} {
		t.Run(sc.name, func(t *testing.T) {
			s.checkPlugin(t)
			t.Cleanup(func() { s.checkPlugin(t) })
			sc.fn(t)
		})
	}
}

// checkPlugin fails the scenario when the plugin has died, and restarts it
// so the next scenarios do not each wait out docker's 30 s plugin retries.
func (s *singleHost) checkPlugin(t *testing.T) {
	t.Helper()
	p := s.h.Plugin()
	if p == nil || !p.Exited() {
		return
	}
	t.Errorf("plugin pid %d exited (%v); restarting it. Log:\n%s", p.Pid(), p.ExitErr(), p.Log())
	s.h.StartPlugin(t, pluginBin)
}

// vxNet creates a vxbridge network with vxbridge IPAM.
func (s *singleHost) vxNet(t *testing.T, name, subnet string, args ...string) {
	t.Helper()
	full := append([]string{"-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", subnet}, args...)
	createNetwork(t, s.h, name, full...)
}

// Bad input is refused with a message naming what to fix.
func (s *singleHost) badOption(t *testing.T) {
	out, err := s.h.Docker("network", "create", "-d", testbed.PluginName, "-o", "bogus.option=1", "vxbad")
	if err == nil {
		s.h.Docker("network", "rm", "vxbad")
		t.Fatalf("network create with -o bogus.option=1 succeeded:\n%s", out)
	}
	if !strings.Contains(out, "bogus.option") {
		t.Errorf("error does not name the bad option bogus.option:\n%s", out)
	}
	if _, err := s.h.Docker("network", "inspect", "vxbad"); err == nil {
		t.Errorf("network vxbad exists after a failed create")
	}
	// An interface vxbridge did not create is never adopted or deleted.
	s.h.Exec(t, "ip", "link", "add", "vxforeign0", "type", "bridge")
	defer s.h.TryExec("ip", "link", "del", "vxforeign0")
	out, err = s.h.Docker("network", "create", "-d", testbed.PluginName, "-o", "com.docker.network.bridge.name=vxforeign0", "vxbad")
	if err == nil {
		s.h.Docker("network", "rm", "vxbad")
		t.Fatalf("network create on a foreign bridge succeeded:\n%s", out)
	}
	if !strings.Contains(out, "vxforeign0") || !strings.Contains(out, "not") {
		t.Errorf("refusal does not name the foreign interface vxforeign0:\n%s", out)
	}
	s.h.Exec(t, "ip", "link", "show", "vxforeign0")
	for _, o := range []string{"com.docker.network.driver.mtu=20", "com.docker.network.bridge.name=much-too-long-name"} {
		key := strings.SplitN(o, "=", 2)[0]
		if out, err := s.h.Docker("network", "create", "-d", testbed.PluginName, "-o", o, "vxbad"); err == nil || !strings.Contains(out, key) {
			s.h.Docker("network", "rm", "vxbad")
			t.Errorf("-o %s: want a refusal naming %s, got err=%v:\n%s", o, key, err, out)
		}
	}
	// The socket is root's only.
	if st, err := os.Stat(s.h.PluginSocket()); err != nil || st.Mode().Perm() != 0o660 {
		t.Errorf("plugin socket mode = %v (%v), want 0660", st.Mode().Perm(), err)
	}
}

// (1) Two containers reach each other by IP and by name (embedded DNS).
func (s *singleHost) pingByIPAndName(t *testing.T) {
	h := s.h
	s.vxNet(t, "vxn1", "10.77.1.0/24")
	runContainer(t, h, "n1a", "vxn1")
	runContainer(t, h, "n1b", "vxn1")
	ipA, ipB := containerIP(t, h, "n1a", "vxn1", false), containerIP(t, h, "n1b", "vxn1", false)
	_, subnet, _ := net.ParseCIDR("10.77.1.0/24")
	for _, ip := range []string{ipA, ipB} {
		if !subnet.Contains(net.ParseIP(ip)) {
			t.Errorf("address %s is outside the network's subnet %s", ip, subnet)
		}
	}
	waitPing(t, h, "n1a", ipB)
	mustPing(t, h, "n1b", ipA)
	mustPing(t, h, "n1a", "n1b")
	mustPing(t, h, "n1b", "n1a")
}

// (2) Dual stack: IPv6 addresses from the v6 subnet, ping6 by IP.
func (s *singleHost) dualStack(t *testing.T) {
	h := s.h
	s.vxNet(t, "vxn2", "10.77.2.0/24", "--ipv6", "--subnet", "fd77::/64")
	runContainer(t, h, "n2a", "vxn2")
	runContainer(t, h, "n2b", "vxn2")
	v6A, v6B := containerIP(t, h, "n2a", "vxn2", true), containerIP(t, h, "n2b", "vxn2", true)
	_, subnet, _ := net.ParseCIDR("fd77::/64")
	for _, ip := range []string{v6A, v6B} {
		if !subnet.Contains(net.ParseIP(ip)) {
			t.Errorf("IPv6 address %s is outside fd77::/64", ip)
		}
	}
	waitPing(t, h, "n2a", v6B)
	mustPing(t, h, "n2b", v6A)
	mustPing(t, h, "n2a", containerIP(t, h, "n2b", "vxn2", false))
	// Outbound over IPv6 too: the internet namespace has no route back to
	// fd77::/64, so this passes only through the gateway's masquerade.
	waitPing(t, h, "n2a", s.inet.ServerIPv6)
}

// (3) Outbound: a container reaches the internet namespace, which has no
// route back to the container subnet (so only masquerading works).
func (s *singleHost) outbound(t *testing.T) {
	s.vxNet(t, "vxn3", "10.77.3.0/24")
	runContainer(t, s.h, "n3a", "vxn3")
	waitPing(t, s.h, "n3a", s.inet.ServerIPv4)
}

// (4) Isolation between two vxbridge networks and a docker bridge network,
// both directions, with positive controls.
func (s *singleHost) isolation(t *testing.T) {
	h := s.h
	s.vxNet(t, "vxn4a", "10.77.4.0/24", "--gateway", "10.77.4.1")
	s.vxNet(t, "vxn4b", "10.77.5.0/24", "--gateway", "10.77.5.1")
	createNetwork(t, h, "br4", "--subnet", "10.77.6.0/24", "--gateway", "10.77.6.1")
	runContainer(t, h, "n4a1", "vxn4a")
	runContainer(t, h, "n4a2", "vxn4a")
	runContainer(t, h, "n4b", "vxn4b")
	runContainer(t, h, "n4c", "br4")
	a1 := containerIP(t, h, "n4a1", "vxn4a", false)
	a2 := containerIP(t, h, "n4a2", "vxn4a", false)
	b := containerIP(t, h, "n4b", "vxn4b", false)
	c := containerIP(t, h, "n4c", "br4", false)

	waitPing(t, h, "n4a1", a2)
	waitPing(t, h, "n4b", "10.77.5.1")
	waitPing(t, h, "n4c", "10.77.6.1")

	mustNotPing(t, h, "n4a1", b)
	mustNotPing(t, h, "n4b", a1)
	mustNotPing(t, h, "n4a1", c)
	mustNotPing(t, h, "n4c", a1)
}

// (5) enable_icc=false: containers cannot reach each other, only the gateway.
func (s *singleHost) noICC(t *testing.T) {
	h := s.h
	s.vxNet(t, "vxn5", "10.77.7.0/24", "--gateway", "10.77.7.1",
		"-o", "com.docker.network.bridge.enable_icc=false")
	runContainer(t, h, "n5a", "vxn5")
	runContainer(t, h, "n5b", "vxn5")
	ipA, ipB := containerIP(t, h, "n5a", "vxn5", false), containerIP(t, h, "n5b", "vxn5", false)
	waitPing(t, h, "n5a", "10.77.7.1")
	waitPing(t, h, "n5b", "10.77.7.1")
	mustNotPing(t, h, "n5a", ipB)
	mustNotPing(t, h, "n5b", ipA)
}

// (6) --internal: containers reach each other, not the internet; the
// same host reaches the internet from a normal network (control).
func (s *singleHost) internal(t *testing.T) {
	h := s.h
	s.vxNet(t, "vxn6", "10.77.8.0/24", "--internal")
	s.vxNet(t, "vxn6o", "10.77.14.0/24")
	runContainer(t, h, "n6a", "vxn6")
	runContainer(t, h, "n6b", "vxn6")
	runContainer(t, h, "n6o", "vxn6o")
	waitPing(t, h, "n6a", containerIP(t, h, "n6b", "vxn6", false))
	waitPing(t, h, "n6o", s.inet.ServerIPv4)
	mustNotPing(t, h, "n6a", s.inet.ServerIPv4)
	mustNotPing(t, h, "n6b", s.inet.ServerIPv4)
}

// (7) bridge.name and driver.mtu: the bridge has the given name in the
// host, the container's eth0 the given MTU; the bridge goes with the network.
func (s *singleHost) bridgeNameAndMTU(t *testing.T) {
	h := s.h
	s.vxNet(t, "vxn7", "10.77.9.0/24",
		"-o", "com.docker.network.bridge.name=vxbtest0", "-o", "com.docker.network.driver.mtu=1400")
	runContainer(t, h, "n7a", "vxn7")
	h.Exec(t, "ip", "link", "show", "vxbtest0")
	if out := h.MustDocker(t, "exec", "n7a", "ip", "link", "show", "eth0"); !strings.Contains(out, "mtu 1400") {
		t.Errorf("container eth0 does not have mtu 1400:\n%s", out)
	}
	removeContainers(t, h, "n7a")
	h.MustDocker(t, "network", "rm", "vxn7")
	if out, err := h.TryExec("ip", "link", "show", "vxbtest0"); err == nil {
		t.Errorf("bridge vxbtest0 still exists after docker network rm:\n%s", out)
	}
}

// (8) kill -9 of the plugin: running containers keep talking, the restarted
// plugin remembers its allocations and the network can still be removed.
func (s *singleHost) pluginRestart(t *testing.T) {
	h := s.h
	s.vxNet(t, "vxn8", "10.77.10.0/24")
	runContainer(t, h, "n8a", "vxn8")
	runContainer(t, h, "n8b", "vxn8")
	ipA, ipB := containerIP(t, h, "n8a", "vxn8", false), containerIP(t, h, "n8b", "vxn8", false)
	waitPing(t, h, "n8a", ipB)

	orphanAlias := ownMark(t, h, mark.Endpoint, "deadbeef0000")
	if err := h.Plugin().Kill9(); err != nil {
		t.Fatal(err)
	}
	// The data plane is the kernel's: it does not need the plugin running.
	mustPing(t, h, "n8a", ipB)
	mustPing(t, h, "n8b", s.inet.ServerIPv4)
	// What a crash half way through a create leaves (a veth carrying our
	// alias that no record claims), and someone flushing our chain: the
	// start-up reconcile removes the first and restores the second.
	h.Exec(t, "ip", "link", "add", "vxhdeadbeef0000", "type", "veth", "peer", "name", "vxcdeadbeef0000")
	h.Exec(t, "ip", "link", "set", "vxhdeadbeef0000", "alias", orphanAlias)
	fwdBefore := h.Exec(t, "iptables", "-S", "VXBRIDGE-FORWARD")
	h.Exec(t, "iptables", "-F", "VXBRIDGE-FORWARD")
	h.StartPlugin(t, pluginBin)
	if out, err := h.TryExec("ip", "link", "show", "vxhdeadbeef0000"); err == nil {
		t.Errorf("orphan veth with a vxbridge alias survived the restart:\n%s", out)
	}
	if fwdAfter := h.Exec(t, "iptables", "-S", "VXBRIDGE-FORWARD"); fwdAfter != fwdBefore {
		t.Errorf("VXBRIDGE-FORWARD not restored at start-up:\n%s", lineDiff(fwdBefore, fwdAfter))
	}

	mustPing(t, h, "n8a", ipB)
	mustPing(t, h, "n8b", ipA)
	runContainer(t, h, "n8c", "vxn8")
	ipC := containerIP(t, h, "n8c", "vxn8", false)
	if ipC == ipA || ipC == ipB {
		t.Errorf("container started after the plugin restart got %s, already held by n8a (%s) or n8b (%s)", ipC, ipA, ipB)
	}
	waitPing(t, h, "n8c", ipA)

	removeContainers(t, h, "n8a", "n8b", "n8c")
	h.MustDocker(t, "network", "rm", "vxn8")
}

// (9) Removing containers and the network restores the firewall exactly and
// leaves no plugin links.
func (s *singleHost) noLeaks(t *testing.T) {
	h := s.h
	iptBefore := testbed.IPTablesSave(t, h)
	linksBefore := linkState(t, h)

	s.vxNet(t, "vxn9", "10.77.11.0/24")
	runContainer(t, h, "n9a", "vxn9")
	runContainer(t, h, "n9b", "vxn9")
	waitPing(t, h, "n9a", containerIP(t, h, "n9b", "vxn9", false))
	waitPing(t, h, "n9a", s.inet.ServerIPv4) // exercise the NAT rules too
	if during := pluginLinks(linkState(t, h)); len(during) < 3 {
		// A bridge and two host-side veths: else the check below proves nothing.
		t.Errorf("want the network's vxb-* bridge and two veths aliased vxbridge while it runs, found %v", during)
	}
	removeContainers(t, h, "n9a", "n9b")
	h.MustDocker(t, "network", "rm", "vxn9")

	if after := testbed.IPTablesSave(t, h); after != iptBefore {
		t.Errorf("iptables differ after network rm:\n%s", lineDiff(iptBefore, after))
	}
	linksAfter := linkState(t, h)
	for name, line := range linksAfter {
		if _, ok := linksBefore[name]; !ok {
			t.Errorf("link left behind: %s", line)
		}
	}
	if left := pluginLinks(linksAfter); len(left) > 0 {
		t.Errorf("plugin links remain with no vxbridge network left (maybe from an earlier scenario): %s",
			strings.Join(left, ", "))
	}
	// The IPAM released the pool and its addresses: the same subnet, gateway
	// included, can be had again.
	s.vxNet(t, "vxn9again", "10.77.11.0/24", "--gateway", "10.77.11.1")
	h.MustDocker(t, "network", "rm", "vxn9again")
	// LEAKS(): records, links, rules and IPAM agree with docker.
	if found := leaks(t, h); len(found) > 0 {
		t.Errorf("LEAKS() after the scenario:\n  %s", strings.Join(found, "\n  "))
	}
}

// (10) 20 concurrent `docker run -d` on one network all succeed with
// distinct addresses.
func (s *singleHost) parallelRuns(t *testing.T) {
	const n = 20
	h := s.h
	s.vxNet(t, "vxn10", "10.77.12.0/24")
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("n10-%02d", i)
	}
	t.Cleanup(func() { removeContainers(t, h, names...) })
	logFrom := len(h.Plugin().Log())

	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := h.Docker("run", "-d", "--name", name, "--network", "vxn10", testbed.Image, "sleep", "300")
			if err != nil {
				errs[i] = fmt.Errorf("docker run %s: %v\n%s", name, err, out)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		return
	}
	owner := map[string]string{}
	for _, name := range names {
		ip := containerIP(t, h, name, "vxn10", false)
		if other, dup := owner[ip]; dup {
			t.Errorf("%s and %s both have %s", other, name, ip)
		}
		owner[ip] = name
	}
	waitPing(t, h, names[0], containerIP(t, h, names[n-1], "vxn10", false))
	removeContainers(t, h, names...)
	removeNetworkAfterRuns(t, h, "vxn10", logFrom)
}

// (11) The network driver with docker's default IPAM.
func (s *singleHost) defaultIPAM(t *testing.T) {
	h := s.h
	createNetwork(t, h, "vxn11", "-d", testbed.PluginName, "--subnet", "10.77.13.0/24")
	runContainer(t, h, "n11a", "vxn11")
	runContainer(t, h, "n11b", "vxn11")
	waitPing(t, h, "n11a", containerIP(t, h, "n11b", "vxn11", false))
	mustPing(t, h, "n11b", containerIP(t, h, "n11a", "vxn11", false))
	mustPing(t, h, "n11a", "n11b")
}

// lineDiff lists the lines only in a ("-") and only in b ("+").
func lineDiff(a, b string) string {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	var out []string
	for l, c := range count {
		for ; c > 0; c-- {
			out = append(out, "- "+l)
		}
		for ; c < 0; c++ {
			out = append(out, "+ "+l)
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "(same lines, different order)"
	}
	return strings.Join(out, "\n")
}

// (12) --ip, --ip-range and --aux-address go through vxbridge's IPAM as
// docker sends them; an overlapping pool is refused naming the one in use.
func (s *singleHost) staticAddresses(t *testing.T) {
	h := s.h
	s.vxNet(t, "vxn12", "10.77.15.0/24", "--gateway", "10.77.15.1",
		"--ip-range", "10.77.15.128/25", "--aux-address", "router=10.77.15.129")
	runContainer(t, h, "n12a", "vxn12", "--ip", "10.77.15.10")
	runContainer(t, h, "n12b", "vxn12")
	if ip := containerIP(t, h, "n12a", "vxn12", false); ip != "10.77.15.10" {
		t.Errorf("--ip 10.77.15.10 gave %s", ip)
	}
	ipB := containerIP(t, h, "n12b", "vxn12", false)
	_, rng, _ := net.ParseCIDR("10.77.15.128/25")
	if !rng.Contains(net.ParseIP(ipB)) || ipB == "10.77.15.129" {
		t.Errorf("dynamic address %s is outside --ip-range %s or is the aux address", ipB, rng)
	}
	waitPing(t, h, "n12a", ipB)
	out, err := h.Docker("run", "--rm", "--network", "vxn12", "--ip", "10.77.15.10", testbed.Image, "true")
	if err == nil || !strings.Contains(out, "10.77.15.10") {
		t.Errorf("a second container with --ip 10.77.15.10 was not refused naming the address:\n%s", out)
	}
	out, err = h.Docker("network", "create", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName,
		"--subnet", "10.77.15.0/25", "vxn12o")
	if err == nil {
		h.Docker("network", "rm", "vxn12o")
		t.Fatalf("an overlapping pool was accepted:\n%s", out)
	}
	if !strings.Contains(out, "overlaps") || !strings.Contains(out, "10.77.15.0/24") {
		t.Errorf("overlap refusal does not name the pool in use:\n%s", out)
	}
}

// (13) A container restarted with the same --ip is a new endpoint. It keeps
// its MAC (derived from the address), so its peers' ARP caches stay right
// and it is reachable at once: with a new MAC a peer that talked to it just
// before would send to the old one for many seconds (its entry stays
// REACHABLE, then STALE with unicast probes), and nothing the restarted
// container sends is guaranteed to correct it.
func (s *singleHost) restartSameIP(t *testing.T) {
	h := s.h
	s.vxNet(t, "vxn13", "10.77.16.0/24")
	runContainer(t, h, "n13a", "vxn13")
	runContainer(t, h, "n13b", "vxn13", "--ip", "10.77.16.10")
	waitPing(t, h, "n13a", "10.77.16.10") // n13a now has n13b's MAC in its ARP cache
	macFormat := `{{with index .NetworkSettings.Networks "vxn13"}}{{.MacAddress}}{{end}}`
	before := strings.TrimSpace(h.MustDocker(t, "inspect", "-f", macFormat, "n13b"))
	h.MustDocker(t, "restart", "-t", "0", "n13b")
	after := strings.TrimSpace(h.MustDocker(t, "inspect", "-f", macFormat, "n13b"))
	if after != before || before == "" {
		t.Errorf("n13b's MAC changed across a restart with the same --ip: %q, then %q", before, after)
	}
	if err := ping(h, "n13a", "10.77.16.10"); err != nil {
		t.Errorf("right after n13b's restart with the same --ip, a peer that knew it cannot reach it: %v\nn13a's ARP cache: %s",
			err, h.MustDocker(t, "exec", "n13a", "ip", "neigh"))
	}
}
