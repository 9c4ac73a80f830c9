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
	if got := k.endpoint("h1", "ep1"); got != "/vx/endpoints/h1/ep1" {
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
	if !k.relevant("/vx/hosts/h1") || !k.relevant("/vx/endpoints/h1/e") || k.relevant("/vx/blocks/x") || k.relevant("/vx/hosts/") {
		t.Fatal("relevant")
	}
}

func TestViewRemotes(t *testing.T) {
	k := newKeys("")
	v := NewView()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(v.apply(k, k.host("h1"), []byte(`{"vtep":"192.0.2.1","port":4789}`)))
	must(v.apply(k, k.host("h2"), []byte(`{"vtep":"192.0.2.2","port":4789}`)))
	// The key says whose endpoint it is, whatever the value claims.
	must(v.apply(k, k.endpoint("h2", "e2"), []byte(`{"id":"e2","host":"h1","vni":42,"mac":"02:00:00:00:00:02","ipv4":"10.1.0.2"}`)))
	must(v.apply(k, k.endpoint("h1", "e1"), []byte(`{"id":"e1","vni":42,"mac":"02:00:00:00:00:01"}`)))
	must(v.apply(k, k.endpoint("h2", "e3"), []byte(`{"id":"e3","vni":43,"mac":"02:00:00:00:00:03"}`)))
	must(v.apply(k, k.endpoint("h9", "e9"), []byte(`{"id":"e9","vni":42,"mac":"02:00:00:00:00:09"}`))) // host gone
	if err := v.apply(k, k.host("bad"), []byte(`{`)); err == nil {
		t.Fatal("undecodable host accepted")
	}
	got := v.Remotes("h1", 42)
	if len(got) != 1 || got[0].ID != "e2" || got[0].Host != "h2" || got[0].VTEP != netip.MustParseAddr("192.0.2.2") {
		t.Fatalf("Remotes(h1, 42) = %+v", got)
	}
	must(v.apply(k, k.host("h2"), nil))
	if got := v.Remotes("h1", 42); len(got) != 0 {
		t.Fatalf("endpoint of a gone host still listed: %+v", got)
	}
	must(v.apply(k, k.endpoint("h2", "e2"), nil))
	if _, ok := v.Endpoints["h2/e2"]; ok {
		t.Fatal("deleted endpoint kept")
	}
	c := v.clone()
	delete(c.Hosts, "h1")
	if _, ok := v.Hosts["h1"]; !ok {
		t.Fatal("clone shares its maps")
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
