package firewall

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// testPorts publishes, for endpoint ep of the dual-stack network "n1"
// (bridge vxb-n1, 10.1.0.0/24 and fd00:1::/64), TCP 8080 -> 80 on every
// host address in both families.
func testPorts(ep string) Ports {
	return Ports{
		NetworkID: "n1", EndpointID: ep, Bridge: "vxb-n1",
		Subnets: []netip.Prefix{prefix("10.1.0.0/24"), prefix("fd00:1::/64")},
		Mappings: []PortMapping{
			{Proto: "tcp", HostIP: netip.IPv4Unspecified(), HostPort: 8080, ContainerIP: addr("10.1.0.2"), ContainerPort: 80},
			{Proto: "tcp", HostIP: netip.IPv6Unspecified(), HostPort: 8080, ContainerIP: addr("fd00:1::2"), ContainerPort: 80},
		},
	}
}

func TestPortRules(t *testing.T) {
	p := testPorts("e1")
	p.Mappings = append(p.Mappings,
		PortMapping{Proto: "udp", HostIP: addr("192.0.2.2"), HostPort: 5353, ContainerIP: addr("10.1.0.2"), ContainerPort: 53},
		// Served by the proxy only: loopback, and a v6 host port of a v4 container.
		PortMapping{Proto: "tcp", HostIP: addr("127.0.0.1"), HostPort: 9090, ContainerIP: addr("10.1.0.2"), ContainerPort: 90},
		PortMapping{Proto: "tcp", HostIP: netip.IPv6Unspecified(), HostPort: 9091, ContainerIP: addr("10.1.0.2"), ContainerPort: 91},
	)
	rules := PortRules(p)
	const c = `-m comment --comment "vxbridge:n1:e1"`
	want4 := []string{
		`nat -A VXBRIDGE-DNAT ! -d 127.0.0.0/8 -p tcp -m tcp --dport 8080 ` + c + ` -j DNAT --to-destination 10.1.0.2:80`,
		`filter -A VXBRIDGE-FORWARD -d 10.1.0.2/32 ! -i vxb-n1 -o vxb-n1 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT ` + c + ` -j ACCEPT`,
		`nat -A VXBRIDGE-POSTROUTING -s 10.1.0.0/24 -d 10.1.0.2/32 -o vxb-n1 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT ` + c + ` -j MASQUERADE`,
		`nat -A VXBRIDGE-DNAT -d 192.0.2.2/32 -p udp -m udp --dport 5353 ` + c + ` -j DNAT --to-destination 10.1.0.2:53`,
		`filter -A VXBRIDGE-FORWARD -d 10.1.0.2/32 ! -i vxb-n1 -o vxb-n1 -p udp -m udp --dport 53 -m conntrack --ctstate DNAT ` + c + ` -j ACCEPT`,
		`nat -A VXBRIDGE-POSTROUTING -s 10.1.0.0/24 -d 10.1.0.2/32 -o vxb-n1 -p udp -m udp --dport 53 -m conntrack --ctstate DNAT ` + c + ` -j MASQUERADE`,
	}
	want6 := []string{
		`nat -A VXBRIDGE-DNAT ! -d ::1/128 -p tcp -m tcp --dport 8080 ` + c + ` -j DNAT --to-destination [fd00:1::2]:80`,
		`filter -A VXBRIDGE-FORWARD -d fd00:1::2/128 ! -i vxb-n1 -o vxb-n1 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT ` + c + ` -j ACCEPT`,
		`nat -A VXBRIDGE-POSTROUTING -s fd00:1::/64 -d fd00:1::2/128 -o vxb-n1 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT ` + c + ` -j MASQUERADE`,
	}
	if got := lines(rules, false); !slices.Equal(got, want4) {
		t.Errorf("v4 rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want4, "\n"))
	}
	if got := lines(rules, true); !slices.Equal(got, want6) {
		t.Errorf("v6 rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want6, "\n"))
	}
	for _, r := range rules {
		n, e, ok := linePorts(r.Line())
		if !ok || n != "n1" || e != "e1" {
			t.Errorf("rule %q attributed to %q/%q", r.Line(), n, e)
		}
		if id, _ := lineNetwork(r.Line()); id == "n1" {
			t.Errorf("rule %q is taken for a network rule of n1", r.Line())
		}
	}
}

func TestPortsValidate(t *testing.T) {
	if err := testPorts("e1").Validate(); err != nil {
		t.Fatalf("valid ports refused: %v", err)
	}
	for name, mut := range map[string]func(*Ports){
		"colon in endpoint": func(p *Ports) { p.EndpointID = "a:b" },
		"empty network":     func(p *Ports) { p.NetworkID = "" },
		"docker bridge":     func(p *Ports) { p.Bridge = "docker0" },
		"protocol":          func(p *Ports) { p.Mappings[0].Proto = "icmp" },
		"host port 0":       func(p *Ports) { p.Mappings[0].HostPort = 0 },
		"container port 0":  func(p *Ports) { p.Mappings[0].ContainerPort = 0 },
		"no host address":   func(p *Ports) { p.Mappings[0].HostIP = netip.Addr{} },
		"zoned host":        func(p *Ports) { p.Mappings[1].HostIP = addr("fe80::1%eth0") },
		"mapped container":  func(p *Ports) { p.Mappings[0].ContainerIP = addr("::ffff:10.1.0.2") },
		"any container":     func(p *Ports) { p.Mappings[0].ContainerIP = netip.IPv4Unspecified() },
	} {
		p := testPorts("e1")
		p.Mappings = slices.Clone(p.Mappings)
		mut(&p)
		if err := p.Validate(); !errors.Is(err, ErrInvalidNetwork) {
			t.Errorf("%s: Validate = %v, want ErrInvalidNetwork", name, err)
		}
	}
}

func portsReq(p Ports, ipv6 bool) syncRequest {
	return syncRequest{desired: familyOnly(PortRules(p), ipv6), owns: (&Firewall{}).ownsEndpointPorts(p.NetworkID, p.EndpointID)}
}

func TestPlanPortsComeAndGoWithTheirChain(t *testing.T) {
	st := dockerState()
	n := testNetwork("n1", "vxb-n1", "10.1.0.0/24")
	step(t, st, ensureReq(n))
	withNetwork := cloneState(st)

	step(t, st, portsReq(testPorts("e1"), false))
	if got := chainLines(st, tableNat, "PREROUTING"); !slices.Contains(got, preroutingDNATJump) {
		t.Errorf("PREROUTING lacks the DNAT jump: %q", got)
	}
	if got := chainLines(st, tableNat, "OUTPUT"); !slices.Contains(got, outputDNATJump) {
		t.Errorf("OUTPUT lacks the DNAT jump: %q", got)
	}
	if got := chainLines(st, tableNat, ChainDNAT); len(got) != 1 {
		t.Errorf("%s holds %q, want one DNAT rule", ChainDNAT, got)
	}
	// A second endpoint; the network's own EnsureNetwork leaves both alone.
	step(t, st, portsReq(testPorts("e2"), false))
	if script := plan(st, ensureReq(n)); !script.empty() {
		t.Errorf("EnsureNetwork would touch port rules:\n%s", script)
	}
	step(t, st, syncRequest{owns: (&Firewall{}).ownsEndpointPorts("n1", "e1")})
	if got := chainLines(st, tableNat, ChainDNAT); len(got) != 1 || !strings.Contains(got[0], "n1:e2") {
		t.Errorf("removing e1's ports left %q", got)
	}
	step(t, st, syncRequest{owns: (&Firewall{}).ownsEndpointPorts("n1", "e2")})
	if diff := stateDiff(withNetwork, st); diff != "" {
		t.Errorf("after the last port went, the tables differ from before the first:\n%s", diff)
	}
}

func TestPlanReconcileKeepsOnlyListedPorts(t *testing.T) {
	st := dockerState()
	n := testNetwork("n1", "vxb-n1", "10.1.0.0/24")
	step(t, st, ensureReq(n))
	withNetwork := cloneState(st)
	step(t, st, portsReq(testPorts("e1"), false))
	step(t, st, portsReq(testPorts("stale"), false))
	want := cloneState(st)

	// Someone flushes the DNAT chain and deletes a jump.
	st[tableNat].rules[ChainDNAT] = nil
	st[tableNat].rules["OUTPUT"] = slices.DeleteFunc(st[tableNat].rules["OUTPUT"], func(l string) bool { return l == outputDNATJump })
	reconcile := func(ports ...Ports) syncRequest {
		req := reconcileReq(n)
		for _, p := range ports {
			req.desired = append(req.desired, familyOnly(PortRules(p), false)...)
		}
		return req
	}
	step(t, st, reconcile(testPorts("e1"), testPorts("stale")))
	if diff := stateDiff(want, st); diff != "" {
		t.Errorf("reconcile did not repair the flush:\n%s", diff)
	}
	step(t, st, reconcile(testPorts("e1")))
	for _, l := range chainLines(st, tableNat, ChainDNAT) {
		if strings.Contains(l, "stale") {
			t.Errorf("reconcile kept a rule of an endpoint it was not given: %q", l)
		}
	}
	step(t, st, reconcile())
	if diff := stateDiff(withNetwork, st); diff != "" {
		t.Errorf("reconcile without ports left:\n%s", diff)
	}
}

func TestPlanRemoveNetworkTakesItsPortRules(t *testing.T) {
	st := dockerState()
	before := cloneState(st)
	n := testNetwork("n1", "vxb-n1", "10.1.0.0/24")
	step(t, st, ensureReq(n))
	step(t, st, portsReq(testPorts("e1"), false))
	step(t, st, syncRequest{owns: func(l string) bool { return taggedWith(l, "n1") || portsOfNetwork(l, "n1") }})
	if diff := stateDiff(before, st); diff != "" {
		t.Errorf("tables after removing the network:\n%s", diff)
	}
}

func TestPlanJumpsOnlyRestoresDNATJumps(t *testing.T) {
	st := dockerState()
	step(t, st, ensureReq(testNetwork("n1", "vxb-n1", "10.1.0.0/24")))
	step(t, st, portsReq(testPorts("e1"), false))
	want := cloneState(st)
	st[tableNat].rules["PREROUTING"] = slices.DeleteFunc(st[tableNat].rules["PREROUTING"], func(l string) bool { return l == preroutingDNATJump })
	st[tableNat].rules["OUTPUT"] = append(st[tableNat].rules["OUTPUT"], outputDNATJump) // doubled
	step(t, st, syncRequest{jumpsOnly: true})
	if diff := stateDiff(want, st); diff != "" {
		t.Errorf("jumps not restored:\n%s", diff)
	}
}

// Kernel tier: the rules as iptables lists them, and the tables after the
// last port went.
func TestKernelPortsRoundTrip(t *testing.T) {
	ns, fw := newKernelFirewall(t)
	seedDocker(t, ns)
	n := testNetwork("n1", "vxb-n1", "10.1.0.0/24", "fd00:1::/64")
	do(t, ns, func() error { return fw.EnsureNetwork(n) })
	before := dump(t, ns)

	p := testPorts("e1")
	p.Mappings = append(p.Mappings,
		PortMapping{Proto: "udp", HostIP: addr("192.0.2.2"), HostPort: 5353, ContainerIP: addr("10.1.0.2"), ContainerPort: 53},
		PortMapping{Proto: "sctp", HostIP: netip.IPv4Unspecified(), HostPort: 3868, ContainerIP: addr("10.1.0.2"), ContainerPort: 3868})
	do(t, ns, func() error { return fw.EnsurePorts(p) })
	requireRules(t, ns, PortRules(p))
	requireRules(t, ns, Rules(n))
	for _, bin := range []string{"iptables", "ip6tables"} {
		nat := listing(t, ns, bin, tableNat)
		if countOf(nat, preroutingDNATJump) != 1 || countOf(nat, outputDNATJump) != 1 {
			t.Errorf("%s -t nat: want one jump into %s from PREROUTING and OUTPUT:\n%s", bin, ChainDNAT, strings.Join(nat, "\n"))
		}
	}
	withPorts := dump(t, ns)
	do(t, ns, func() error { return fw.EnsurePorts(p) })
	do(t, ns, func() error { return fw.Reconcile([]Network{n}, []Ports{p}, ownsAll) })
	if got := dump(t, ns); got != withPorts {
		t.Errorf("EnsurePorts/Reconcile with nothing to do changed the tables:\n%s\nbefore:\n%s", got, withPorts)
	}

	// Someone flushes our chains and a jump: Reconcile puts it all back.
	run(t, ns, "iptables", "-w", "-t", "nat", "-F", ChainDNAT)
	run(t, ns, "iptables", "-w", "-t", "nat", "-D", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", ChainDNAT)
	run(t, ns, "ip6tables", "-w", "-F", ChainForward)
	do(t, ns, func() error { return fw.Reconcile([]Network{n}, []Ports{p}, ownsAll) })
	if got := dump(t, ns); got != withPorts {
		t.Errorf("after a flush and Reconcile:\n%s\nwant:\n%s", got, withPorts)
	}

	// One mapping less, then none.
	p.Mappings = p.Mappings[:1]
	do(t, ns, func() error { return fw.EnsurePorts(p) })
	requireRules(t, ns, PortRules(p))
	do(t, ns, func() error { return fw.RemovePorts(p) })
	if after := dump(t, ns); after != before {
		t.Errorf("tables after RemovePorts:\n%s\nbefore:\n%s", after, before)
	}
}

// The DNAT rules PortRules writes decode back to their mappings, in the
// form iptables-save prints them, so rules dropped by a reconcile (no record
// left to say what they were) still get their conntrack entries flushed.
func TestDNATRulesDecodeBackToMappings(t *testing.T) {
	p := testPorts("e1")
	p.Mappings = append(p.Mappings,
		PortMapping{Proto: "udp", HostIP: addr("192.0.2.2"), HostPort: 5353, ContainerIP: addr("10.1.0.2"), ContainerPort: 53})
	var lines []string
	for _, r := range PortRules(p) {
		if r.Table == tableNat && r.Chain == ChainDNAT {
			lines = append(lines, r.Line())
		}
	}
	got := dnatMappings(append(lines, "-A VXBRIDGE-DNAT -j RETURN", "garbage"))
	var want []PortMapping
	for _, m := range p.Mappings {
		if m.kernelPath() {
			want = append(want, m)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("decoded %d mappings from %d DNAT rules, want %d:\n%q\n%+v", len(got), len(lines), len(want), lines, got)
	}
	for _, m := range want {
		if !slices.Contains(got, m) {
			t.Errorf("mapping %+v not decoded from %q", m, lines)
		}
	}
}

// A reconcile that drops rules no record claims reports their DNAT rules.
func TestPlanReportsDroppedDNATRules(t *testing.T) {
	st := dockerState()
	step(t, st, ensureReq(testNetwork("n1", "vxb-n1", "10.1.0.0/24")))
	kept, gone := testPorts("e1"), testPorts("e2")
	gone.Mappings = []PortMapping{{Proto: "udp", HostIP: netip.IPv4Unspecified(), HostPort: 9000, ContainerIP: addr("10.1.0.3"), ContainerPort: 90}}
	step(t, st, portsReq(kept, false))
	step(t, st, portsReq(gone, false))
	s := plan(st, syncRequest{desired: familyOnly(slices.Concat(Rules(testNetwork("n1", "vxb-n1", "10.1.0.0/24")), PortRules(kept)), false),
		owns: func(string) bool { return true }})
	if got := dnatMappings(s.droppedDNAT); len(got) != 1 || got[0] != gone.Mappings[0] {
		t.Errorf("dropped DNAT mappings %+v, want exactly %+v", got, gone.Mappings[0])
	}
	// Tearing everything down drops every DNAT rule.
	s = plan(st, syncRequest{owns: func(string) bool { return true }})
	if got := dnatMappings(s.droppedDNAT); len(got) != 2 {
		t.Errorf("teardown dropped %+v, want both endpoints' DNAT rules", got)
	}
}
