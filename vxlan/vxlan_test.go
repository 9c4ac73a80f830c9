package vxlan

import (
	"net"
	"net/netip"
	"reflect"
	"testing"
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func ips(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestDeviceName(t *testing.T) {
	for vni, want := range map[uint32]string{1: "vxv-1", 4096: "vxv-1000", MaxVNI: "vxv-ffffff"} {
		if got := DeviceName(vni); got != want || len(got) > 15 {
			t.Errorf("DeviceName(%d) = %q, want %q", vni, got, want)
		}
	}
}

func TestMTU(t *testing.T) {
	cases := []struct{ underlay, requested, want int }{
		{1500, 0, 1450},
		{1500, 1400, 1400},
		{1500, 1450, 1450},
		{1500, 1500, 1450}, // asking for more than fits is capped
		{9000, 0, 8950},
	}
	for _, c := range cases {
		if got := MTU(c.underlay, c.requested); got != c.want {
			t.Errorf("MTU(%d, %d) = %d, want %d", c.underlay, c.requested, got, c.want)
		}
	}
}

func TestValidVNI(t *testing.T) {
	for vni, want := range map[uint64]bool{0: false, 1: true, MaxVNI: true, MaxVNI + 1: false} {
		if ValidVNI(vni) != want {
			t.Errorf("ValidVNI(%d) = %t", vni, !want)
		}
	}
}

func TestDeviceValidate(t *testing.T) {
	ok := Device{Name: "vxv-2a", Alias: "vxbridge:vxlan:x", VNI: 42, Port: 4789, Local: netip.MustParseAddr("192.0.2.1"),
		Bridge: "vxb-x"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid device refused: %v", err)
	}
	bad := []func(*Device){
		func(d *Device) { d.Name = "" },
		func(d *Device) { d.Name = "a-very-long-name-x" },
		func(d *Device) { d.VNI = 0 },
		func(d *Device) { d.VNI = MaxVNI + 1 },
		func(d *Device) { d.Port = 0 },
		func(d *Device) { d.Local = netip.Addr{} },
		func(d *Device) { d.Bridge = "" },
		func(d *Device) { d.Alias = "" },
	}
	for i, mutate := range bad {
		d := ok
		mutate(&d)
		if err := d.Validate(); err == nil {
			t.Errorf("case %d: %+v accepted", i, d)
		}
	}
}

func TestDesired(t *testing.T) {
	vtepA, vtepB := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	peers := []Peer{
		{MAC: mac("02:00:00:00:00:02"), IPs: ips("10.0.0.3", "fd00::3"), VTEP: vtepB},
		{MAC: mac("02:00:00:00:00:01"), IPs: ips("10.0.0.2"), VTEP: vtepA},
		{MAC: mac("02:00:00:00:00:01"), IPs: ips("10.0.0.9"), VTEP: vtepB}, // same MAC elsewhere: loses
		{MAC: nil, IPs: ips("10.0.0.7"), VTEP: vtepA},                      // no MAC: skipped
		{MAC: mac("02:00:00:00:00:05"), IPs: ips("10.0.0.3"), VTEP: vtepA}, // IP already claimed by ...:02? no: sorts after
	}
	got := Desired(peers)
	want := Table{
		FDB: []FDB{
			{MAC: "02:00:00:00:00:01", Dst: vtepA},
			{MAC: "02:00:00:00:00:02", Dst: vtepB},
			{MAC: "02:00:00:00:00:05", Dst: vtepA},
		},
		Neigh: []Neigh{
			{IP: netip.MustParseAddr("10.0.0.2"), MAC: "02:00:00:00:00:01"},
			{IP: netip.MustParseAddr("10.0.0.3"), MAC: "02:00:00:00:00:02"},
			{IP: netip.MustParseAddr("fd00::3"), MAC: "02:00:00:00:00:02"},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Desired:\n got %+v\nwant %+v", got, want)
	}
	// Order of the input does not matter.
	rev := []Peer{peers[4], peers[3], peers[2], peers[1], peers[0]}
	if again := Desired(rev); !reflect.DeepEqual(again, want) {
		t.Fatalf("Desired depends on input order:\n got %+v\nwant %+v", again, want)
	}
	if empty := Desired(nil); len(empty.FDB)+len(empty.Neigh) != 0 {
		t.Fatalf("Desired(nil) = %+v", empty)
	}
}

func TestPlan(t *testing.T) {
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	ip1, ip2, ip3 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::3")
	m1, m2, m3 := "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"

	cases := []struct {
		name            string
		desired, actual Table
		want            Changes
	}{
		{name: "in sync", desired: Table{FDB: []FDB{{m1, a}}, Neigh: []Neigh{{ip1, m1}}},
			actual: Table{FDB: []FDB{{m1, a}}, Neigh: []Neigh{{ip1, m1}}}},
		{name: "empty kernel", desired: Table{FDB: []FDB{{m1, a}, {m2, b}}, Neigh: []Neigh{{ip1, m1}, {ip3, m2}}},
			want: Changes{SetFDB: []FDB{{m1, a}, {m2, b}}, SetNeigh: []Neigh{{ip1, m1}, {ip3, m2}}}},
		{name: "peer gone", actual: Table{FDB: []FDB{{m1, a}}, Neigh: []Neigh{{ip1, m1}, {ip3, m1}}},
			want: Changes{DelFDB: []FDB{{m1, a}}, DelNeigh: []Neigh{{ip1, m1}, {ip3, m1}}}},
		{name: "peer moved host: replaced, not deleted",
			desired: Table{FDB: []FDB{{m1, b}}}, actual: Table{FDB: []FDB{{m1, a}}},
			want: Changes{SetFDB: []FDB{{m1, b}}}},
		{name: "address moved to a new MAC: replaced",
			desired: Table{Neigh: []Neigh{{ip2, m3}}}, actual: Table{Neigh: []Neigh{{ip2, m2}}},
			want: Changes{SetNeigh: []Neigh{{ip2, m3}}}},
		{name: "MAC held twice: the extra goes",
			desired: Table{FDB: []FDB{{m1, a}}}, actual: Table{FDB: []FDB{{m1, a}, {m1, c}}},
			want: Changes{DelFDB: []FDB{{m1, c}}}},
		{name: "MAC held twice, wanted at a third",
			desired: Table{FDB: []FDB{{m1, b}}}, actual: Table{FDB: []FDB{{m1, a}, {m1, c}}},
			want: Changes{SetFDB: []FDB{{m1, b}}, DelFDB: []FDB{{m1, a}, {m1, c}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Plan(tc.desired, tc.actual)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Plan:\n got %+v\nwant %+v", got, tc.want)
			}
			if got.Empty() != (tc.want.Empty()) {
				t.Fatalf("Empty() = %t", got.Empty())
			}
		})
	}
}

func TestRaisedLimits(t *testing.T) {
	def := NeighLimits{128, 512, 1024}
	if l, changed := RaisedLimits(def, 0); changed || l != def {
		t.Fatalf("no entries: %+v, %t", l, changed)
	}
	l, changed := RaisedLimits(def, 3000)
	if !changed || l.Thresh3 != 4024 || l.Thresh2 != 2012 || l.Thresh1 != 503 {
		t.Fatalf("3000 entries: %+v, %t", l, changed)
	}
	high := NeighLimits{8192, 32768, 65536}
	if l, changed := RaisedLimits(high, 3000); changed || l != high {
		t.Fatalf("never lowered: %+v, %t", l, changed)
	}
}
