package cluster

import (
	"net/netip"
	"strings"
	"testing"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestCheckNetwork(t *testing.T) {
	have := Network{VNI: 42, Subnets: pfx("fd00::/64", "10.1.0.0/24"), Host: "h1"}
	if err := CheckNetwork(have, Network{VNI: 42, Subnets: pfx("10.1.0.0/24", "fd00::/64")}); err != nil {
		t.Fatalf("same subnets in another order refused: %v", err)
	}
	err := CheckNetwork(have, Network{VNI: 42, Subnets: pfx("10.2.0.0/24")})
	if err == nil {
		t.Fatal("different subnet accepted")
	}
	for _, want := range []string{"vxlan.id 42", "10.1.0.0/24 and fd00::/64", "h1", "asks for subnet 10.2.0.0/24"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if err := CheckNetwork(have, Network{VNI: 42, Subnets: pfx("10.1.0.0/24")}); err == nil {
		t.Fatal("missing IPv6 subnet accepted")
	}
}

func TestCheckSubnet(t *testing.T) {
	want := Network{VNI: 43, Subnets: pfx("10.1.0.0/24")}
	if err := CheckSubnet(want, want.Subnets[0], 43); err != nil {
		t.Fatal(err)
	}
	err := CheckSubnet(want, want.Subnets[0], 42)
	if err == nil || !strings.Contains(err.Error(), "vxlan.id 42") || !strings.Contains(err.Error(), "vxlan.id 43") ||
		!strings.Contains(err.Error(), "10.1.0.0/24") {
		t.Fatalf("error does not name both: %v", err)
	}
}

func TestKeys(t *testing.T) {
	k := newKeys("/vx/")
	if got := k.netEndpoint(42, "h1", "ep1"); got != "/vx/net/42/eps/h1/ep1" {
		t.Fatal(got)
	}
	if got := k.netMember(42, "h1"); got != "/vx/net/42/members/h1" {
		t.Fatal(got)
	}
	if got := k.block("10.1.0.0_24", netip.MustParsePrefix("10.1.0.64/26")); got != "/vx/blocks/10.1.0.0_24/10.1.0.64_26" {
		t.Fatal(got)
	}
	p, err := unescapePrefix("fd00::40_122")
	if err != nil || p != netip.MustParsePrefix("fd00::40/122") {
		t.Fatal(p, err)
	}
	if newKeys("").prefix != DefaultPrefix {
		t.Fatal("empty prefix")
	}
}

func TestDecodeNetRecord(t *testing.T) {
	k := newKeys("")
	// The key says whose endpoint it is and of which network; a value that
	// says otherwise is refused (below).
	c, err := k.decodeNetRecord(42, k.netEndpoint(42, "h2", "e2"),
		[]byte(`{"mac":"02:00:00:00:00:02","ipv4":"10.1.0.2"}`), 17)
	if err != nil || c.Kind != EndpointSet || c.Endpoint.Host != "h2" || c.Endpoint.ID != "e2" || c.Endpoint.VNI != 42 ||
		c.Endpoint.Rev != 17 || c.Endpoint.IPv4 != netip.MustParseAddr("10.1.0.2") {
		t.Fatalf("%+v %v", c, err)
	}
	c, err = k.decodeNetRecord(42, k.netMember(42, "h2"), []byte(`{"host":"h2","vtep":"192.0.2.2","port":4789}`), 5)
	if err != nil || c.Kind != MemberSet || c.Member.Host != "h2" || c.Member.VTEP != netip.MustParseAddr("192.0.2.2") || c.Member.Rev != 5 {
		t.Fatalf("%+v %v", c, err)
	}
	if c, err := k.decodeNetRecord(42, k.netEndpoint(42, "h2", "e2"), nil, 0); err != nil || c.Kind != EndpointGone || c.Key() != "e/h2/e2" {
		t.Fatalf("%+v %v", c, err)
	}
	if c, err := k.decodeNetRecord(42, k.netMember(42, "h2"), nil, 0); err != nil || c.Kind != MemberGone || c.Key() != "m/h2" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []struct{ key, val string }{
		{k.netEndpoint(43, "h2", "e2"), `{}`},           // another network's key
		{k.netRoot(42) + "eps/h2", `{}`},                // no endpoint id
		{k.netRoot(42) + "eps/h2/e2/x", `{}`},           // too deep
		{k.netRoot(42) + "members/", `{}`},              // no host
		{k.netRoot(42) + "other/h2", `{}`},              // unknown kind
		{k.netEndpoint(42, "h2", "e2"), `{`},            // undecodable
		{k.netMember(42, "h2"), `{"vtep":"not an ip"}`}, // undecodable
		// Key and value disagree: another host, endpoint or network.
		{k.netMember(42, "h2"), `{"host":"h9","vtep":"192.0.2.2"}`},
		{k.netEndpoint(42, "h2", "e2"), `{"host":"h1","mac":"02:00:00:00:00:02"}`},
		{k.netEndpoint(42, "h2", "e2"), `{"id":"zz","mac":"02:00:00:00:00:02"}`},
		{k.netEndpoint(42, "h2", "e2"), `{"vni":7,"mac":"02:00:00:00:00:02"}`},
	} {
		if c, err := k.decodeNetRecord(42, bad.key, []byte(bad.val), 1); err == nil {
			t.Errorf("%s=%s decoded as %+v", bad.key, bad.val, c)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := nextBackoff(0)
	if b != minBackoff {
		t.Fatal(b)
	}
	for range 20 {
		b = nextBackoff(b)
	}
	if b != maxBackoff {
		t.Fatal(b)
	}
}
