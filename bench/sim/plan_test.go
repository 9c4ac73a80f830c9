package sim

import (
	"net/netip"
	"testing"
)

func TestParseShape(t *testing.T) {
	for in, want := range map[string]Shape{"3of20": {20, 3}, "1of1": {1, 1}} {
		got, err := ParseShape(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("ParseShape(%q) = %+v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "3", "4of3", "0of5", "aofb", "3of"} {
		if _, err := ParseShape(bad); err == nil {
			t.Errorf("ParseShape(%q) accepted", bad)
		}
	}
}

// TestPlan: every network gets the same share of hosts, subnets do not
// overlap and hold every member's address blocks, and the observers leave
// the rest of the networks foreign.
func TestPlan(t *testing.T) {
	p, err := NewPlan(Shape{Networks: 20, PerHost: 3}, 1000, 50, 2)
	if err != nil {
		t.Fatal(err)
	}
	members := make([]int, len(p.Nets))
	for h := range p.Hosts {
		for _, n := range p.HostNets(h) {
			members[n]++
		}
	}
	for i, n := range members {
		if n != 150 {
			t.Errorf("network %d has %d hosts, want 150", i, n)
		}
		blocks := (n + p.Observers) * 64 // one /26 per member: 17 endpoints each
		if size := 1 << (32 - p.Nets[i].Subnet.Bits()); size < blocks {
			t.Errorf("network %d: %s holds %d addresses, its members' blocks %d", i, p.Nets[i].Subnet, size, blocks)
		}
		for j := range i {
			if p.Nets[i].Subnet.Overlaps(p.Nets[j].Subnet) {
				t.Errorf("%s overlaps %s", p.Nets[i].Subnet, p.Nets[j].Subnet)
			}
		}
	}
	if p.Nets[0].VNI != BaseVNI || p.Nets[0].Subnet != netip.MustParsePrefix("10.0.0.0/18") {
		t.Errorf("network 0 = %+v", p.Nets[0])
	}
	if f := p.Foreign(); len(f) != 14 || f[0] != 6 {
		t.Errorf("foreign networks %v, want 6..19 (observers in 0..5)", f)
	}
	one, err := NewPlan(Shape{Networks: 1, PerHost: 1}, 1000, 50, 3)
	if err != nil || len(one.Foreign()) != 0 || one.Nets[0].Subnet.Bits() > 14 {
		t.Errorf("one network: %+v, %v (two /26 blocks per host need a /14)", one.Nets, err)
	}
	if _, err := NewPlan(Shape{Networks: 20, PerHost: 20}, 100000, 50, 1); err == nil {
		t.Error("a plan larger than 10.0.0.0/8 was accepted")
	}
}

func TestEndpointsIn(t *testing.T) {
	sum := 0
	for k := range 3 {
		sum += EndpointsIn(50, 3, k)
	}
	if sum != 50 || EndpointsIn(50, 3, 0) != 17 || EndpointsIn(50, 3, 2) != 16 {
		t.Errorf("50 endpoints over 3 networks: %d, %d, %d", EndpointsIn(50, 3, 0), EndpointsIn(50, 3, 1), EndpointsIn(50, 3, 2))
	}
}
