package driver

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/store"
)

func FuzzParseNetwork(f *testing.F) {
	f.Add([]byte(`{"NetworkID":"abc","Options":{"com.docker.network.generic":{"com.docker.network.driver.mtu":"1400"},"com.docker.network.enable_ipv6":true},"IPv4Data":[{"Pool":"10.0.0.0/24","Gateway":"10.0.0.1/24","AuxAddresses":{"a":"10.0.0.2/24"}}],"IPv6Data":[{"Pool":"fd00::/64","Gateway":"fd00::1/64"}]}`))
	f.Add([]byte(`{"NetworkID":"x","Options":{"com.docker.network.generic":{"com.docker.network.bridge.name":"br0","com.docker.network.bridge.enable_icc":"false"}}}`))
	f.Add([]byte(`{"NetworkID":"x","Options":{"com.docker.network.internal":"yes"},"IPv4Data":[null]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var req network.CreateNetworkRequest
		if json.Unmarshal(data, &req) != nil {
			return
		}
		n, err := parseNetwork(&req)
		if err != nil {
			return
		}
		// What parses must be a network the kernel rooms can take.
		if n.Bridge == "" || len(n.Bridge) > 15 || n.MTU < 0 || n.MTU > maxMTU {
			t.Fatalf("parsed an unusable network: %+v", n)
		}
		for _, s := range n.Subnets() {
			if s.Gateway.IsValid() && !s.Pool.Contains(s.Gateway.Addr()) {
				t.Fatalf("gateway %s outside pool %s", s.Gateway, s.Pool)
			}
		}
	})
}

func FuzzNewEndpoint(f *testing.F) {
	f.Add("0123456789abcdef", "10.0.0.2/24", "", "")
	f.Add("e", "10.0.0.300/24", "fd00::5/64", "zz:zz")
	f.Add("0123456789abcdef", "", "fd00::5/64", "02:42:ac:11:00:02")
	d := New(Config{})
	n := &store.Network{ID: "n", IPv4: []store.Subnet{{Pool: mustPrefix("10.0.0.0/24")}}, IPv6: []store.Subnet{{Pool: mustPrefix("fd00::/64")}}}
	f.Fuzz(func(t *testing.T, id, v4, v6, mac string) {
		req := &network.CreateEndpointRequest{NetworkID: "n", EndpointID: id,
			Interface: &network.EndpointInterface{Address: v4, AddressIPv6: v6, MacAddress: mac}}
		ep, err := d.newEndpoint(req, n)
		if err != nil {
			return
		}
		if len(ep.HostVeth) > 15 || len(ep.PeerVeth) > 15 {
			t.Fatalf("veth names too long: %q %q", ep.HostVeth, ep.PeerVeth)
		}
	})
}

// FuzzParseVNI: the -o vxlan.id value; accepted only inside the 24-bit range.
func FuzzParseVNI(f *testing.F) {
	for _, s := range []string{"1", "16777215", "16777216", "0", "-1", "0x10", " 42", "4294967297"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseVNI("vxlan.id", s)
		if err != nil {
			if !strings.Contains(err.Error(), "vxlan.id") {
				t.Fatalf("error for %q does not name the option: %v", s, err)
			}
			return
		}
		if v == 0 || v > 1<<24-1 {
			t.Fatalf("parseVNI(%q) = %d, outside 1..2^24-1", s, v)
		}
	})
}
