package ports

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vxbridge/vxbridge/internal/testutil/fakes"
	"github.com/vxbridge/vxbridge/portproxy"
	"github.com/vxbridge/vxbridge/store"
)

// wantsOf is what specs ask for endpoint id at IPv4 address addr, on a
// network without options, on a host with IPv6.
func wantsOf(t *testing.T, addr string, specs ...string) []Want {
	t.Helper()
	binds, err := ParseBindings(portmap(specs...))
	if err != nil {
		t.Fatal(err)
	}
	wants, err := Expand(binds, &store.Network{}, &store.Endpoint{IPv4: netip.MustParsePrefix(addr)}, true)
	if err != nil {
		t.Fatal(err)
	}
	return wants
}

func strs(ms []store.PortMapping) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.String())
	}
	return out
}

func TestAllocatorEphemeralRoundRobinSameForBothFamilies(t *testing.T) {
	res := fakes.NewPorts()
	a := NewAllocator(res)
	a.next = 8 // of 40000-40009
	res.Busy["tcp [::]:40008"] = true
	first, err := a.Allocate(wantsOf(t, "10.10.0.2/24", "::80/tcp"), nil)
	if err != nil {
		t.Fatal(err)
	}
	eps := []store.Endpoint{{ID: "ep1", NetworkID: "net", Ports: first}}
	second, err := a.Allocate(wantsOf(t, "10.10.0.3/24", "::80/tcp"), Taken(eps, "ep2"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strs(first), []string{"0.0.0.0:40009->80/tcp", "[::]:40009->80/tcp"}; !slices.Equal(got, want) {
		t.Errorf("first endpoint got %q, want %q (40008 is half taken)", got, want)
	}
	if got, want := strs(second), []string{"0.0.0.0:40000->80/tcp", "[::]:40000->80/tcp"}; !slices.Equal(got, want) {
		t.Errorf("second endpoint got %q, want %q (round robin wraps)", got, want)
	}
	if res.Held["tcp 0.0.0.0:40008"] != (portproxy.Mapping{}) {
		t.Errorf("the IPv4 half of the refused 40008 is still held")
	}
	// The whole range taken.
	for p := 40000; p <= 40009; p++ {
		res.Busy[fmt.Sprintf("tcp 0.0.0.0:%d", p)] = true
	}
	held := res.Keys()
	_, err = a.Allocate(wantsOf(t, "10.10.0.4/24", "::80/tcp"), nil)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "port is already allocated") || !strings.Contains(err.Error(), "40000-40009") {
		t.Errorf("full range: err = %v", err)
	}
	if got := res.Keys(); !slices.Equal(got, held) {
		t.Errorf("held %q after the refusal, want %q", got, held)
	}
}

func TestAllocatorRangePicksFirstFreePort(t *testing.T) {
	res := fakes.NewPorts()
	res.Busy["tcp 0.0.0.0:9000"] = true
	got, err := NewAllocator(res).Allocate(wantsOf(t, "10.10.0.2/24", ":9000-9002:80/tcp"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(strs(got), []string{"0.0.0.0:9001->80/tcp", "[::]:9001->80/tcp"}) {
		t.Errorf("got %q", strs(got))
	}
}

// A port another endpoint publishes, or one the request asks for twice, is
// refused naming why, and nothing of the request stays held.
func TestAllocatorRefusesTakenPorts(t *testing.T) {
	owner := store.PortMapping{Proto: "tcp", HostIP: netip.IPv4Unspecified(), HostPort: 8080,
		ContainerIP: netip.MustParseAddr("10.10.0.9"), ContainerPort: 80}
	eps := []store.Endpoint{{ID: "000000000001ffff", NetworkID: "aaaaaaaaaaaa1111", Ports: []store.PortMapping{owner}}}
	for _, c := range []struct {
		specs []string
		why   string
	}{
		{[]string{":7070:70/tcp", ":8080:80/tcp"}, "endpoint 000000000001 of vxbridge network aaaaaaaaaaaa"},
		{[]string{"192.0.2.5:8080:80/tcp"}, "endpoint 000000000001"}, // inside the wildcard
		{[]string{":7070:70/tcp", ":7070:71/tcp"}, "asks for it twice"},
	} {
		res := fakes.NewPorts()
		_, err := NewAllocator(res).Allocate(wantsOf(t, "10.10.0.2/24", c.specs...), Taken(eps, "ep2"))
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%q: err = %v, want a refusal naming %q", c.specs, err, c.why)
		}
		if held := res.Keys(); len(held) != 0 {
			t.Errorf("%q: %q held after the refusal", c.specs, held)
		}
	}
	// An endpoint's own stored ports are not in its way.
	if taken := Taken(eps, "000000000001ffff"); len(taken) != 0 {
		t.Errorf("Taken lists the endpoint's own ports: %v", taken)
	}
}
