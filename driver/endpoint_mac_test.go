package driver

import (
	"net/netip"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
)

func TestAddrMAC(t *testing.T) {
	for _, c := range []struct {
		v4, v6 string
		want   string
		fromV4 bool
	}{
		{"10.78.61.50/24", "", "76:78:0a:4e:3d:32", true},
		{"10.78.61.50/24", "fd00::1:2:3/64", "76:78:0a:4e:3d:32", true},
		{"", "fd00::1:a0b:c0d/64", "76:36:0a:0b:0c:0d", false},
		{"", "", "", false},
	} {
		var v4, v6 netip.Prefix
		if c.v4 != "" {
			v4 = netip.MustParsePrefix(c.v4)
		}
		if c.v6 != "" {
			v6 = netip.MustParsePrefix(c.v6)
		}
		got, fromV4 := addrMAC(v4, v6)
		if got != c.want || fromV4 != c.fromV4 {
			t.Errorf("addrMAC(%q, %q) = %q, %v; want %q, %v", c.v4, c.v6, got, fromV4, c.want, c.fromV4)
		}
	}
}

// A container restarted with the same --ip gets a new endpoint: it must
// keep its MAC, or its peers' ARP caches point at the old one.
func TestEndpointMACFollowsAddress(t *testing.T) {
	h := newHarness(t)
	mustCreate(t, h, createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil))
	first := createEndpoint(t, h, epID(1), "10.10.0.50/24", "").Interface.MacAddress
	if first != "76:78:0a:0a:00:32" {
		t.Errorf("MAC of 10.10.0.50 = %q, want 76:78:0a:0a:00:32", first)
	}
	if err := h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: epID(1)}); err != nil {
		t.Fatal(err)
	}
	if again := createEndpoint(t, h, epID(2), "10.10.0.50/24", "").Interface.MacAddress; again != first {
		t.Errorf("same address, new endpoint: MAC %q, want %q as before", again, first)
	}
	if other := createEndpoint(t, h, epID(3), "10.10.0.51/24", "").Interface.MacAddress; other == first {
		t.Errorf("another address got the same MAC %q", other)
	}
}

// IPv6 addresses that share their low 32 bits would share a derived MAC:
// the second endpoint gets a random one.
func TestEndpointMACIPv6Collision(t *testing.T) {
	h := newHarness(t)
	h.d.macGen = func() (string, error) { return "02:00:00:00:00:99", nil }
	req := &network.CreateNetworkRequest{NetworkID: netA,
		Options:  map[string]interface{}{keyGeneric: map[string]interface{}{}, keyEnableIPv6: true},
		IPv6Data: []*network.IPAMData{{Pool: "fd00:10::/64", Gateway: "fd00:10::1/64"}}}
	mustCreate(t, h, req)
	create := func(i int, addr string) string {
		t.Helper()
		resp, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epID(i),
			Interface: &network.EndpointInterface{AddressIPv6: addr}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Interface.MacAddress
	}
	if got := create(1, "fd00:10::1:0:5/64"); got != "76:36:00:00:00:05" {
		t.Errorf("first MAC = %q, want 76:36:00:00:00:05", got)
	}
	if got := create(2, "fd00:10::2:0:5/64"); got != "02:00:00:00:00:99" {
		t.Errorf("colliding MAC = %q, want the random one", got)
	}
}
