package firewall

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzPlanOnListing feeds arbitrary `iptables -S` listings (what another
// program may have left in the tables) through the parser and the planner:
// no panic, and a plan that tears down or converges only lines of ours.
func FuzzPlanOnListing(f *testing.F) {
	f.Add("-P FORWARD DROP\n-N DOCKER-USER\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN", "-P POSTROUTING ACCEPT")
	f.Add("-N VXBRIDGE-FORWARD\n-A VXBRIDGE-FORWARD -j VXBRIDGE-ISOLATION\n-A VXBRIDGE-FORWARD -o vxb-x -m comment --comment vxbridge:x -j ACCEPT", "-N VXBRIDGE-DNAT\n-A VXBRIDGE-DNAT -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.2:80")
	f.Add("-A", "-N\n-A VXBRIDGE-DNAT ! -d 127.0.0.0/8 -p udp --dport 99999 --to-destination [::1]:x")
	f.Fuzz(func(t *testing.T, filter, nat string) {
		st := familyState{tableFilter: parseTable(filter), tableNat: parseTable(nat), tableMangle: parseTable(emptyMangle)}
		n := Network{ID: "n1", Bridge: "vxb-n1", Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}, Masquerade: true, ICC: true}
		for _, req := range []syncRequest{
			{desired: familyOnly(Rules(n), false), owns: func(l string) bool { return taggedWith(l, n.ID) }},
			{owns: func(string) bool { return true }},
			{jumpsOnly: true},
		} {
			s := plan(st, req)
			_ = s.String()
			for _, m := range dnatMappings(s.droppedDNAT) {
				if !m.ContainerIP.IsValid() || !m.HostIP.IsValid() || m.HostPort == 0 {
					t.Fatalf("decoded an incomplete mapping %+v", m)
				}
			}
		}
	})
}

// FuzzParseDNAT: any line decodes or is skipped without panic, and every
// DNAT rule PortRules writes decodes back to its mapping.
func FuzzParseDNAT(f *testing.F) {
	f.Add("tcp", "0.0.0.0", uint16(8080), "10.1.0.2", uint16(80), "-A VXBRIDGE-DNAT -p tcp --dport 1 -j DNAT --to-destination 1.2.3.4:5")
	f.Add("udp", "192.0.2.1", uint16(53), "10.1.0.3", uint16(5353), "! -d")
	f.Add("tcp", "::", uint16(443), "fd00::2", uint16(8443), "--to-destination [fd00::1]:0 --dport 65536")
	f.Fuzz(func(t *testing.T, proto, hostIP string, hostPort uint16, ctrIP string, ctrPort uint16, line string) {
		parseDNAT(line)
		h, err1 := netip.ParseAddr(hostIP)
		c, err2 := netip.ParseAddr(ctrIP)
		if err1 != nil || err2 != nil || hostPort == 0 || ctrPort == 0 || h.Zone() != "" || c.Zone() != "" {
			return
		}
		m := PortMapping{Proto: proto, HostIP: h.Unmap(), HostPort: hostPort, ContainerIP: c.Unmap(), ContainerPort: ctrPort}
		p := Ports{NetworkID: "n1", EndpointID: "e1", Bridge: "vxb-n1", Mappings: []PortMapping{m},
			Subnets: []netip.Prefix{netip.PrefixFrom(m.ContainerIP, m.ContainerIP.BitLen()-8).Masked()}}
		if p.Validate() != nil || !m.kernelPath() {
			return
		}
		for _, r := range PortRules(p) {
			if r.Table != tableNat || r.Chain != ChainDNAT {
				continue
			}
			got, ok := parseDNAT(r.Line())
			if !ok || got != m {
				t.Fatalf("rule %q decoded as %+v (%t), want %+v", r.Line(), got, ok, m)
			}
			if strings.Contains(r.Line(), "\n") {
				t.Fatalf("rule spans lines: %q", r.Line())
			}
		}
	})
}
