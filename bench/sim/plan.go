// Package sim is what figure 6's harness (package bench) and the synthetic
// hosts (command bench/simhosts) agree on: the membership shapes and the
// networks they make, the records of what the synthetic hosts wrote to etcd
// and when, and the control protocol between the two. The harness of one
// checkout drives simhosts binaries built from other commits (the "before"
// anchor), so what is here changes only compatibly. It is pure.
package sim

import (
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
)

// Shape is how synthetic hosts are spread over networks: Networks
// cross-host networks, each host a member of PerHost of them.
type Shape struct {
	Networks int
	PerHost  int
}

// ParseShape reads "KofN" (each host in K of N networks), e.g. "3of20";
// "1of1" is one network spanning every host.
func ParseShape(s string) (Shape, error) {
	k, n, ok := strings.Cut(s, "of")
	per, err1 := strconv.Atoi(k)
	nets, err2 := strconv.Atoi(n)
	if !ok || err1 != nil || err2 != nil || per < 1 || nets < per {
		return Shape{}, fmt.Errorf("shape %q: want KofN with 1 <= K <= N, e.g. 3of20 or 1of1", s)
	}
	return Shape{Networks: nets, PerHost: per}, nil
}

func (s Shape) String() string { return fmt.Sprintf("%dof%d", s.PerHost, s.Networks) }

// Net is one cross-host network of the simulation.
type Net struct {
	VNI    uint32
	Subnet netip.Prefix
}

// BaseVNI is the VXLAN id of network 0; network i has BaseVNI+i.
const BaseVNI = 6000

// Plan is the networks of a run and who is in which.
type Plan struct {
	Shape     Shape
	Hosts     int // synthetic hosts
	PerHost   int // endpoints per synthetic host, spread over its networks
	Observers int // real plugins, each a member like a synthetic host
	Nets      []Net
}

// space is where the networks' subnets are laid out, one after another.
var space = netip.MustParsePrefix("10.0.0.0/8")

// NewPlan lays out the networks with subnets large enough for every member's
// address blocks (64 addresses each, ipam's default, and a second block
// where a host holds more than fits one with the prefetch margin).
func NewPlan(shape Shape, hosts, perHost, observers int) (Plan, error) {
	p := Plan{Shape: shape, Hosts: hosts, PerHost: perHost, Observers: observers}
	if hosts < 1 || perHost < 1 || observers < 0 {
		return Plan{}, fmt.Errorf("plan: %d hosts, %d endpoints per host, %d observers: want at least 1, 1, 0", hosts, perHost, observers)
	}
	members := (hosts*shape.PerHost+shape.Networks-1)/shape.Networks + observers + 1
	perNet := (perHost + shape.PerHost - 1) / shape.PerHost
	blocks := (perNet + 20 + 59) / 60
	need := uint64(members) * uint64(blocks) * 64 * 5 / 4
	size := uint64(1) << max(8, bits.Len64(need))
	if size*uint64(shape.Networks) > 1<<(32-space.Bits()) {
		return Plan{}, fmt.Errorf("plan: %d networks of %d addresses do not fit %s: fewer hosts or networks", shape.Networks, size, space)
	}
	base := space.Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	for i := range shape.Networks {
		a := start + uint32(uint64(i)*size)
		addr := netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
		p.Nets = append(p.Nets, Net{VNI: BaseVNI + uint32(i), Subnet: netip.PrefixFrom(addr, 32-bits.Len64(size-1))})
	}
	return p, nil
}

// member is the networks of member m (synthetic host index, or an
// observer's): PerHost consecutive ones, wrapping, so every network gets
// the same number of members.
func (p Plan) member(m int) []int {
	out := make([]int, p.Shape.PerHost)
	for j := range out {
		out[j] = (m*p.Shape.PerHost + j) % p.Shape.Networks
	}
	return out
}

// HostNets is the indices (into Nets) of synthetic host h's networks.
func (p Plan) HostNets(h int) []int { return p.member(h) }

// ObserverNets is the indices of observer o's networks: the first observers
// take the first networks, so the last ones have none (Foreign).
func (p Plan) ObserverNets(o int) []int { return p.member(o) }

// Foreign is the indices of networks no observer is a member of.
func (p Plan) Foreign() []int {
	in := map[int]bool{}
	for o := range p.Observers {
		for _, n := range p.ObserverNets(o) {
			in[n] = true
		}
	}
	var out []int
	for i := range p.Nets {
		if !in[i] {
			out = append(out, i)
		}
	}
	return out
}

// EndpointsIn is how many of a member's endpoints go to its k-th network:
// perHost split as evenly as it goes, the first networks taking the rest.
func EndpointsIn(perHost, networks, k int) int {
	n := perHost / networks
	if k < perHost%networks {
		n++
	}
	return n
}

// VNIs is the VXLAN ids of the networks with the given indices.
func (p Plan) VNIs(idx []int) []uint32 {
	out := make([]uint32, len(idx))
	for i, n := range idx {
		out[i] = p.Nets[n].VNI
	}
	return out
}
