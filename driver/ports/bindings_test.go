package ports

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/vxbridge/vxbridge/internal/testutil/fakes"
	"github.com/vxbridge/vxbridge/store"
)

// portmap is docker's option as it arrives (see fakes.PortBindings).
func portmap(specs ...string) map[string]interface{} {
	return map[string]interface{}{OptionKey: fakes.PortBindings(specs...)}
}

func TestParseBindings(t *testing.T) {
	binds, err := ParseBindings(portmap(":8080:80/tcp", "127.0.0.1:5353:53/udp", ":9000-9010:80/tcp", "[::1]::443/sctp"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Binding{
		{Proto: 6, Port: 80, HostPort: 8080},
		{Proto: 17, Port: 53, HostIP: "127.0.0.1", HostPort: 5353},
		{Proto: 6, Port: 80, HostPort: 9000, HostPortEnd: 9010},
		{Proto: 132, Port: 443, HostIP: "::1"},
	}
	if !slices.Equal(binds, want) {
		t.Errorf("parsed %+v\nwant %+v", binds, want)
	}
	if binds, err := ParseBindings(map[string]interface{}{}); err != nil || binds != nil {
		t.Errorf("no portmap: %v, %v", binds, err)
	}
	for name, opts := range map[string]map[string]interface{}{
		"protocol":       portmap(":80:80/icmp"),
		"container 0":    portmap(":80:0/tcp"),
		"reversed range": portmap(":90-80:80/tcp"),
		"range from 0":   portmap(":0-80:80/tcp"),
		"host address":   portmap("localhost:80:80/tcp"),
		"zoned address":  portmap("[fe80::1%eth0]:80:80/tcp"),
		"port too big":   {OptionKey: []interface{}{map[string]interface{}{"Proto": 6.0, "Port": 70000.0}}},
		"not a list":     {OptionKey: "8080:80"},
		"wrong type":     {OptionKey: []interface{}{map[string]interface{}{"Proto": "tcp", "Port": 80.0}}},
	} {
		if _, err := ParseBindings(opts); !errors.Is(err, ErrRefused) {
			t.Errorf("%s: err = %v, want ErrRefused", name, err)
		}
	}
}

func TestExpand(t *testing.T) {
	v4 := &store.Endpoint{IPv4: netip.MustParsePrefix("10.0.0.2/24")}
	dual := &store.Endpoint{IPv4: netip.MustParsePrefix("10.0.0.2/24"), IPv6: netip.MustParsePrefix("fd00::2/64")}
	v6 := &store.Endpoint{IPv6: netip.MustParsePrefix("fd00::2/64")}
	plain := &store.Network{}
	bound := &store.Network{HostBindingIPv4: netip.MustParseAddr("192.0.2.7")}
	for _, c := range []struct {
		name string
		n    *store.Network
		ep   *store.Endpoint
		spec string
		noV6 bool
		want []string // host -> container, "!" for an error
	}{
		{"v4 container, both host families", plain, v4, ":8080:80/tcp", false, []string{"0.0.0.0:8080 10.0.0.2:80", "[::]:8080 10.0.0.2:80"}},
		{"host without IPv6", plain, v4, ":8080:80/tcp", true, []string{"0.0.0.0:8080 10.0.0.2:80"}},
		{"dual stack", plain, dual, ":8080:80/udp", false, []string{"0.0.0.0:8080 10.0.0.2:80", "[::]:8080 [fd00::2]:80"}},
		{"v6 container", plain, v6, ":8080:80/tcp", false, []string{"[::]:8080 [fd00::2]:80"}},
		{"host_binding_ipv4", bound, dual, ":8080:80/tcp", false, []string{"192.0.2.7:8080 10.0.0.2:80"}},
		{"host_binding_ipv4, v6 container", bound, v6, ":8080:80/tcp", false, []string{"!"}},
		{"explicit v4", bound, dual, "127.0.0.1:8080:80/tcp", false, []string{"127.0.0.1:8080 10.0.0.2:80"}},
		{"explicit v4, v6 container", plain, v6, "127.0.0.1:8080:80/tcp", false, []string{"!"}},
		{"explicit v6, v4 container", plain, v4, "[::1]:8080:80/tcp", false, []string{"[::1]:8080 10.0.0.2:80"}},
		{"explicit v6, host without IPv6", plain, v4, "[::1]:8080:80/tcp", true, []string{"!"}},
		{"mapped v4", plain, v4, "[::ffff:192.0.2.1]:8080:80/tcp", false, []string{"192.0.2.1:8080 10.0.0.2:80"}},
		{"ephemeral", plain, v4, "::80/tcp", true, []string{"0.0.0.0:0 10.0.0.2:80"}},
	} {
		binds, err := ParseBindings(portmap(c.spec))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		wants, err := Expand(binds, c.n, c.ep, !c.noV6)
		var got []string
		for _, w := range wants {
			got = append(got, netip.AddrPortFrom(w.hostIP, w.lo).String()+" "+w.container.String())
		}
		if err != nil {
			got = []string{"!"}
			if !errors.Is(err, ErrRefused) {
				t.Errorf("%s: err = %v, want ErrRefused", c.name, err)
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}
