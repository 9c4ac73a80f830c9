package driver

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestParseNetworkDefaults(t *testing.T) {
	n, err := parseNetwork(createReq(netA, "10.1.0.0/24", "10.1.0.1/24", nil))
	if err != nil {
		t.Fatal(err)
	}
	if n.Bridge != "vxb-aaaaaaaaaaa" || !n.ICC || !n.Masquerade || n.Internal || n.MTU != 0 {
		t.Errorf("defaults = %+v", n)
	}
	if n.IPv4[0].Gateway != mustPrefix("10.1.0.1/24") {
		t.Errorf("gateway = %v", n.IPv4[0].Gateway)
	}
}

func TestParseNetworkOptions(t *testing.T) {
	req := createReq(netA, "10.1.0.0/24", "10.1.0.1/24", map[string]interface{}{
		OptBridgeName: "mybr0", OptMTU: "9000", OptICC: "false", OptMasquerade: "false", OptHostBindingIPv4: "192.0.2.10",
	})
	req.IPv4Data[0].AuxAddresses = map[string]interface{}{"router": "10.1.0.254/24"}
	n, err := parseNetwork(req)
	if err != nil {
		t.Fatal(err)
	}
	if n.Bridge != "mybr0" || n.MTU != 9000 || n.ICC || n.Masquerade || n.HostBindingIPv4 != netip.MustParseAddr("192.0.2.10") {
		t.Errorf("parsed = %+v", n)
	}
	if n.IPv4[0].Aux["router"] != netip.MustParseAddr("10.1.0.254") {
		t.Errorf("aux = %v", n.IPv4[0].Aux)
	}
}

func TestParseNetworkRefusals(t *testing.T) {
	cases := map[string]*network.CreateNetworkRequest{
		"empty id":            createReq("", "10.1.0.0/24", "", nil),
		"gateway outside":     createReq(netA, "10.1.0.0/24", "10.2.0.1/24", nil),
		"v6 pool in v4 slot":  createReq(netA, "fd00::/64", "", nil),
		"two v4 subnets":      {NetworkID: netA, IPv4Data: []*network.IPAMData{{Pool: "10.1.0.0/24"}, {Pool: "10.2.0.0/24"}}},
		"small mtu with ipv6": {NetworkID: netA, Options: map[string]interface{}{keyGeneric: map[string]interface{}{OptMTU: "1200"}}, IPv6Data: []*network.IPAMData{{Pool: "fd00::/64"}}},
		"generic not a map":   {NetworkID: netA, Options: map[string]interface{}{keyGeneric: "x"}},
		"aux outside":         {NetworkID: netA, IPv4Data: []*network.IPAMData{{Pool: "10.1.0.0/24", AuxAddresses: map[string]interface{}{"a": "10.9.0.1"}}}},
	}
	for name, req := range cases {
		if _, err := parseNetwork(req); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// familyReq is a CreateNetwork request as docker sends it: current reports
// docker 28+ (it sends the top-level enable_ipv4 and has read the family
// options itself), otherwise docker before 28.
func familyReq(current, v4, v6 bool, generic map[string]interface{}) *network.CreateNetworkRequest {
	req := &network.CreateNetworkRequest{NetworkID: netA, Options: map[string]interface{}{
		keyGeneric: generic, keyEnableIPv6: v6,
	}}
	if current {
		req.Options[keyEnableIPv4] = v4
	}
	if v4 {
		req.IPv4Data = []*network.IPAMData{{Pool: "10.1.0.0/24", Gateway: "10.1.0.1/24"}}
	}
	if v6 {
		req.IPv6Data = []*network.IPAMData{{Pool: "fd00:1::/64", Gateway: "fd00:1::1/64"}}
	}
	return req
}

func TestParseNetworkFamilyOptions(t *testing.T) {
	for _, c := range []struct {
		name            string
		current, v4, v6 bool
		generic         map[string]interface{}
		refused         string // a word of the error; "" when accepted
	}{
		// Docker 28+ has turned the options into the network's families.
		{"current ipv6 on", true, true, true, map[string]interface{}{OptEnableIPv6: "true"}, ""},
		{"current ipv6 off", true, true, false, map[string]interface{}{OptEnableIPv6: "false"}, ""},
		{"current ipv6 only", true, false, true, map[string]interface{}{OptEnableIPv4: "false", OptEnableIPv6: "true"}, ""},
		{"current not a bool", true, true, true, map[string]interface{}{OptEnableIPv6: "yes"}, "true or false"},
		// Older docker ignores them: what it did must be what they ask.
		{"old agrees ipv6", false, true, true, map[string]interface{}{OptEnableIPv6: "true"}, ""},
		{"old agrees ipv4", false, true, false, map[string]interface{}{OptEnableIPv4: "true", OptEnableIPv6: "0"}, ""},
		{"old ipv6 ignored", false, true, false, map[string]interface{}{OptEnableIPv6: "true"}, "--ipv6=true"},
		{"old ipv6 off ignored", false, true, true, map[string]interface{}{OptEnableIPv6: "false"}, "--ipv6=false"},
		{"old ipv4 off ignored", false, true, true, map[string]interface{}{OptEnableIPv4: "false"}, "docker 28"},
		{"old not a bool", false, true, true, map[string]interface{}{OptEnableIPv4: "no way"}, "true or false"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := parseNetwork(familyReq(c.current, c.v4, c.v6, c.generic))
			switch {
			case c.refused == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.refused != "" && err == nil:
				t.Fatalf("accepted, want an error saying %q", c.refused)
			case c.refused != "" && !strings.Contains(err.Error(), c.refused):
				t.Fatalf("error %q does not say %q", err, c.refused)
			case err == nil && (n.EnableIPv6 != c.v6 || len(n.IPv4) > 0 != c.v4 || len(n.IPv6) > 0 != c.v6):
				t.Errorf("network %+v, want IPv4 %t IPv6 %t", n, c.v4, c.v6)
			}
		})
	}
}

// Every option of docker's bridge driver that vxbridge does not implement is
// accepted at docker's default and refused otherwise, saying why.
func TestParseNetworkForeignOptions(t *testing.T) {
	for _, c := range []struct {
		key, ok, bad, why string
	}{
		{"com.docker.network.bridge.gateway_mode_ipv4", "nat", "routed", OptMasquerade + "=false"},
		{"com.docker.network.bridge.gateway_mode_ipv6", "nat", "nat-unprotected", "--internal"},
		{"com.docker.network.bridge.inhibit_ipv4", "false", "true", "gateway"},
		{"com.docker.network.bridge.default_bridge", "0", "true", "docker0"},
		{"com.docker.network.bridge.trusted_host_interfaces", "", "eth0:eth1", "not implemented"},
		{"com.docker.network.host_ipv4", "", "192.0.2.1", "masquerades"},
		{"com.docker.network.host_ipv6", "", "2001:db8::1", "masquerades"},
		{"com.docker.network.container_iface_prefix", "eth", "ctr", "eth0"},
		{"com.docker.network.advertise_addr_nmsgs", "3", "4", "0 to 3"},
		{"com.docker.network.advertise_addr_ms", "100", "99", "100 to 2000"},
	} {
		if _, err := parseNetwork(createReq(netA, "10.1.0.0/24", "", map[string]interface{}{c.key: c.ok})); err != nil {
			t.Errorf("%s=%q: %v", c.key, c.ok, err)
		}
		_, err := parseNetwork(createReq(netA, "10.1.0.0/24", "", map[string]interface{}{c.key: c.bad}))
		if err == nil || !strings.Contains(err.Error(), c.key) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s=%q: error %v, want one naming the option and saying %q", c.key, c.bad, err, c.why)
		}
	}
	_, err := parseNetwork(createReq(netA, "10.1.0.0/24", "", map[string]interface{}{"com.docker.network.bridge.nope": "1"}))
	if err == nil || !strings.Contains(err.Error(), "unknown option") {
		t.Errorf("unknown key: %v", err)
	}
}
