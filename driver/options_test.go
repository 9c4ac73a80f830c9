package driver

import (
	"net/netip"
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
