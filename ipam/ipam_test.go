package ipam

import (
	"errors"
	"strings"
	"testing"

	helpers "github.com/docker/go-plugins-helpers/ipam"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/store"
)

var gatewayOpts = map[string]string{optRequestAddressType: gatewayAddressType}

func openStore(t *testing.T, dir string) *store.DB {
	t.Helper()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newDriver(t *testing.T, st Store, opts Options) *Driver {
	t.Helper()
	d, err := New(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func requestPool(t *testing.T, d *Driver, req helpers.RequestPoolRequest) *helpers.RequestPoolResponse {
	t.Helper()
	resp, err := d.RequestPool(&req)
	if err != nil {
		t.Fatalf("RequestPool(%+v): %v", req, err)
	}
	return resp
}

func requestAddr(t *testing.T, d *Driver, poolID, addr string, opts map[string]string) string {
	t.Helper()
	resp, err := d.RequestAddress(&helpers.RequestAddressRequest{PoolID: poolID, Address: addr, Options: opts})
	if err != nil {
		t.Fatalf("RequestAddress(%s, %q): %v", poolID, addr, err)
	}
	return resp.Address
}

func wantErr(t *testing.T, err error, class error, text string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", text)
	}
	if !errors.Is(err, class) {
		t.Errorf("error %q is not %v", err, class)
	}
	if !strings.Contains(err.Error(), text) {
		t.Errorf("error %q does not contain %q", err, text)
	}
}

func TestCapabilitiesAndSpaces(t *testing.T) {
	d := newDriver(t, openStore(t, t.TempDir()), Options{})
	caps, err := d.GetCapabilities()
	if err != nil || caps.RequiresMACAddress {
		t.Fatalf("GetCapabilities = %+v, %v", caps, err)
	}
	spaces, err := d.GetDefaultAddressSpaces()
	if err != nil || spaces.LocalDefaultAddressSpace != "vxbridge-local" || spaces.GlobalDefaultAddressSpace != "vxbridge-global" {
		t.Fatalf("GetDefaultAddressSpaces = %+v, %v", spaces, err)
	}
	_, err = d.RequestPool(&helpers.RequestPoolRequest{AddressSpace: "elsewhere", Pool: "10.1.0.0/24"})
	wantErr(t, err, ErrInvalid, `unknown address space "elsewhere"`)
}

// TestNetworkLifecycle walks `docker network create --subnet --gateway
// --aux-address` and containers with and without --ip.
func TestNetworkLifecycle(t *testing.T) {
	d := newDriver(t, openStore(t, t.TempDir()), Options{})
	pool := requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.1.0.0/24"})
	if pool.PoolID != "vxbridge-local/10.1.0.0/24" || pool.Pool != "10.1.0.0/24" || len(pool.Data) != 0 {
		t.Fatalf("RequestPool = %+v", pool)
	}
	id := pool.PoolID

	if gw := requestAddr(t, d, id, "", gatewayOpts); gw != "10.1.0.1/24" {
		t.Fatalf("gateway = %s, want 10.1.0.1/24", gw)
	}
	if gw := requestAddr(t, d, id, "10.1.0.1", gatewayOpts); gw != "10.1.0.1/24" {
		t.Fatalf("replayed gateway = %s, want 10.1.0.1/24", gw)
	}
	if aux := requestAddr(t, d, id, "10.1.0.2", nil); aux != "10.1.0.2/24" {
		t.Fatalf("aux = %s", aux)
	}
	if ip := requestAddr(t, d, id, "10.1.0.50", nil); ip != "10.1.0.50/24" {
		t.Fatalf("--ip = %s", ip)
	}
	for _, want := range []string{"10.1.0.3/24", "10.1.0.4/24"} {
		if got := requestAddr(t, d, id, "", nil); got != want {
			t.Fatalf("dynamic = %s, want %s", got, want)
		}
	}

	_, err := d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id, Address: "10.1.0.50"})
	wantErr(t, err, ErrAddressInUse, "address 10.1.0.50 is already in use in pool 10.1.0.0/24")
	_, err = d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id, Address: "10.1.0.1"})
	wantErr(t, err, ErrAddressInUse, "address 10.1.0.1 is already in use in pool 10.1.0.0/24 (gateway)")
	_, err = d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id, Address: "10.1.0.2", Options: gatewayOpts})
	wantErr(t, err, ErrAddressInUse, "address 10.1.0.2 is already in use")
	_, err = d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id, Address: "10.9.9.9"})
	wantErr(t, err, ErrOutsidePool, "address 10.9.9.9 is outside pool 10.1.0.0/24")
	_, err = d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id, Address: "fd00::1"})
	wantErr(t, err, ErrOutsidePool, "address fd00::1 is outside pool 10.1.0.0/24")
	_, err = d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id, Address: "10.1.0.255"})
	wantErr(t, err, ErrOutsidePool, "address 10.1.0.255 is the network, broadcast or subnet-router address of pool 10.1.0.0/24")
	_, err = d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id, Address: "10.1.0.x"})
	wantErr(t, err, ErrInvalid, `invalid address "10.1.0.x"`)
	_, err = d.RequestAddress(&helpers.RequestAddressRequest{PoolID: "vxbridge-local/10.7.0.0/24"})
	wantErr(t, err, ErrUnknownPool, `unknown pool id "vxbridge-local/10.7.0.0/24"`)

	// Docker releases addresses as bare IPs; CIDR is accepted too.
	for _, a := range []string{"10.1.0.50", "10.1.0.3/24", "10.1.0.2", "10.1.0.1"} {
		if err := d.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: id, Address: a}); err != nil {
			t.Fatalf("ReleaseAddress(%s): %v", a, err)
		}
	}
	if ip := requestAddr(t, d, id, "10.1.0.50", nil); ip != "10.1.0.50/24" {
		t.Fatalf("--ip after release = %s", ip)
	}
	if err := d.ReleasePool(&helpers.ReleasePoolRequest{PoolID: id}); err != nil {
		t.Fatal(err)
	}
	_, err = d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id})
	wantErr(t, err, ErrUnknownPool, "unknown pool id")
	// The same subnet is free again, with no address left over.
	requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.1.0.0/24"})
	if got := requestAddr(t, d, id, "10.1.0.50", nil); got != "10.1.0.50/24" {
		t.Fatalf("address of re-requested pool = %s", got)
	}
}

func TestSubPool(t *testing.T) {
	d := newDriver(t, openStore(t, t.TempDir()), Options{})
	pool := requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.2.0.0/16", SubPool: "10.2.5.0/30"})
	id := pool.PoolID
	if id != "vxbridge-local/10.2.0.0/16/10.2.5.0/30" || pool.Pool != "10.2.0.0/16" {
		t.Fatalf("RequestPool = %+v", pool)
	}
	// The gateway and --ip may sit outside the range but inside the pool.
	if gw := requestAddr(t, d, id, "", gatewayOpts); gw != "10.2.0.1/16" {
		t.Fatalf("gateway = %s", gw)
	}
	if ip := requestAddr(t, d, id, "10.2.9.9", nil); ip != "10.2.9.9/16" {
		t.Fatalf("--ip = %s", ip)
	}
	if ip := requestAddr(t, d, id, "10.2.5.1", nil); ip != "10.2.5.1/16" {
		t.Fatalf("--ip in range = %s", ip)
	}
	var got []string
	for range 3 {
		got = append(got, requestAddr(t, d, id, "", nil))
	}
	if strings.Join(got, " ") != "10.2.5.0/16 10.2.5.2/16 10.2.5.3/16" {
		t.Fatalf("dynamic addresses = %v", got)
	}
	_, err := d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id})
	wantErr(t, err, ErrPoolExhausted, "pool 10.2.0.0/16 (ip range 10.2.5.0/30) is exhausted: all 4 addresses 10.2.5.0-10.2.5.3 are in use")

	_, err = d.RequestPool(&helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", SubPool: "10.3.0.0/24"})
	wantErr(t, err, ErrInvalid, `ip range "10.3.0.0/24" given without a subnet`)
}

func TestPoolOverlap(t *testing.T) {
	d := newDriver(t, openStore(t, t.TempDir()), Options{})
	requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.1.0.0/16"})
	_, err := d.RequestPool(&helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.1.0.0/24"})
	wantErr(t, err, ErrPoolOverlap, "pool 10.1.0.0/24 overlaps pool 10.1.0.0/16 already in use (pool id vxbridge-local/10.1.0.0/16)")
	_, err = d.RequestPool(&helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.0.0.0/8", SubPool: "10.9.0.0/16"})
	wantErr(t, err, ErrPoolOverlap, "pool 10.0.0.0/8 overlaps pool 10.1.0.0/16")
	// The same pool with other options is another request: refused.
	_, err = d.RequestPool(&helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.1.0.0/16",
		Options: map[string]string{"k": "v"}})
	wantErr(t, err, ErrPoolOverlap, "pool 10.1.0.0/16 overlaps pool 10.1.0.0/16")
	_, err = d.RequestPool(&helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.1.0.5/24"})
	wantErr(t, err, ErrInvalid, "use 10.1.0.0/24")
	// Address spaces are independent, as in docker.
	requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-global", Pool: "10.1.0.0/24"})
	requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.2.0.0/24"})
}

func TestExhaustion(t *testing.T) {
	d := newDriver(t, openStore(t, t.TempDir()), Options{})
	id := requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.1.0.0/30"}).PoolID
	requestAddr(t, d, id, "", gatewayOpts)
	if got := requestAddr(t, d, id, "", nil); got != "10.1.0.2/30" {
		t.Fatalf("dynamic = %s", got)
	}
	_, err := d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id})
	wantErr(t, err, ErrPoolExhausted, "pool 10.1.0.0/30 is exhausted: all 2 addresses 10.1.0.1-10.1.0.2 are in use")
	if err := d.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: id, Address: "10.1.0.2"}); err != nil {
		t.Fatal(err)
	}
	if got := requestAddr(t, d, id, "", nil); got != "10.1.0.2/30" {
		t.Fatalf("dynamic after release = %s", got)
	}

	for _, tt := range []struct{ pool, gw, dyn string }{
		{"10.1.1.0/31", "10.1.1.0/31", "10.1.1.1/31"},
		{"10.1.2.7/32", "10.1.2.7/32", ""},
		{"fd00:9::/127", "fd00:9::/127", "fd00:9::1/127"},
	} {
		id := requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: tt.pool, V6: strings.Contains(tt.pool, ":")}).PoolID
		if gw := requestAddr(t, d, id, "", gatewayOpts); gw != tt.gw {
			t.Errorf("%s gateway = %s, want %s", tt.pool, gw, tt.gw)
		}
		if tt.dyn != "" {
			if got := requestAddr(t, d, id, "", nil); got != tt.dyn {
				t.Errorf("%s dynamic = %s, want %s", tt.pool, got, tt.dyn)
			}
		}
		if _, err := d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id}); !errors.Is(err, ErrPoolExhausted) {
			t.Errorf("%s: err = %v, want exhausted", tt.pool, err)
		}
	}
}

func TestRoundRobin(t *testing.T) {
	d := newDriver(t, openStore(t, t.TempDir()), Options{})
	id := requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.1.0.0/29"}).PoolID
	first := requestAddr(t, d, id, "", nil)
	if err := d.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: id, Address: strings.TrimSuffix(first, "/29")}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 6 { // .1-.6 usable: the released .1 comes back only after the rest
		got = append(got, requestAddr(t, d, id, "", nil))
	}
	if want := "10.1.0.2/29 10.1.0.3/29 10.1.0.4/29 10.1.0.5/29 10.1.0.6/29 10.1.0.1/29"; strings.Join(got, " ") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}

func TestReleaseUnknown(t *testing.T) {
	d := newDriver(t, openStore(t, t.TempDir()), Options{})
	id := requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.1.0.0/24"}).PoolID
	for _, err := range []error{
		d.ReleasePool(&helpers.ReleasePoolRequest{PoolID: "vxbridge-local/10.99.0.0/24"}),
		d.ReleasePool(&helpers.ReleasePoolRequest{PoolID: "garbage"}),
		d.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: "garbage", Address: "1.2.3.4"}),
		d.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: id, Address: "10.1.0.77"}),
		d.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: id, Address: "10.9.0.1"}),
	} {
		if err != nil {
			t.Errorf("release of unknown: %v", err)
		}
	}
	if err := d.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: id, Address: "nonsense"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("release of unparsable address: err = %v, want ErrInvalid", err)
	}
}

func TestDefaultPools(t *testing.T) {
	routes := []bridge.Route{{Prefix: mp("10.212.0.0/24"), Iface: "eth1"}, {Prefix: mp("192.168.1.0/24"), Iface: "eth0"}}
	d := newDriver(t, openStore(t, t.TempDir()), Options{HostRoutes: func() ([]bridge.Route, error) { return routes, nil }})
	requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-global", Pool: "10.212.1.0/24"})
	// Docker re-asks while it holds a pool it refused: each answer differs.
	var got []string
	for range 2 {
		got = append(got, requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local"}).Pool)
	}
	if strings.Join(got, " ") != "10.212.2.0/24 10.212.3.0/24" {
		t.Fatalf("default pools = %v", got)
	}
	if err := d.ReleasePool(&helpers.ReleasePoolRequest{PoolID: "vxbridge-local/10.212.2.0/24"}); err != nil {
		t.Fatal(err)
	}
	if p := requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local"}).Pool; p != "10.212.2.0/24" {
		t.Fatalf("after release: %s", p)
	}

	routeErr := errors.New("netlink says no")
	d2 := newDriver(t, openStore(t, t.TempDir()), Options{HostRoutes: func() ([]bridge.Route, error) { return nil, routeErr }})
	if _, err := d2.RequestPool(&helpers.RequestPoolRequest{}); !errors.Is(err, routeErr) {
		t.Fatalf("err = %v, want the host route error", err)
	}

	d3 := newDriver(t, openStore(t, t.TempDir()), Options{DefaultPoolsV4: []DefaultPool{{Base: mp("192.168.50.0/23"), Size: 24}}})
	requestPool(t, d3, helpers.RequestPoolRequest{})
	requestPool(t, d3, helpers.RequestPoolRequest{})
	_, err := d3.RequestPool(&helpers.RequestPoolRequest{})
	wantErr(t, err, ErrNoDefaultPool, "no free default IPv4 pool: every /24 of 192.168.50.0/23 overlaps a pool in use or a host route")
}

func TestNewOptions(t *testing.T) {
	st := openStore(t, t.TempDir())
	for _, opts := range []Options{
		{LocalAddressSpace: "a/b"},
		{LocalAddressSpace: "same", GlobalAddressSpace: "same"},
		{DefaultPoolsV4: []DefaultPool{{Base: mp("10.0.0.5/8"), Size: 24}}},
		{DefaultPoolsV4: []DefaultPool{{Base: mp("fd00::/48"), Size: 64}}},
		{DefaultPoolsV4: []DefaultPool{{Base: mp("10.0.0.0/16"), Size: 8}}},
		{DefaultPoolsV6: []DefaultPool{{Base: mp("fd00::/48"), Size: 130}}},
	} {
		if _, err := New(st, opts); !errors.Is(err, ErrInvalid) {
			t.Errorf("New(%+v) err = %v, want ErrInvalid", opts, err)
		}
	}
	if err := st.SetMeta(metaULAPrefix, "2001:db8::/48"); err != nil {
		t.Fatal(err)
	}
	if _, err := New(st, Options{}); err == nil || !strings.Contains(err.Error(), "not a ULA /48") {
		t.Errorf("bad stored ULA: err = %v", err)
	}
	d := newDriver(t, st, Options{LocalAddressSpace: "l", GlobalAddressSpace: "g", DefaultPoolsV6: []DefaultPool{}})
	if _, err := d.RequestPool(&helpers.RequestPoolRequest{V6: true}); !errors.Is(err, ErrNoDefaultPool) {
		t.Errorf("no v6 defaults: err = %v", err)
	}
	if resp := requestPool(t, d, helpers.RequestPoolRequest{}); resp.PoolID != "l/10.212.0.0/24" {
		t.Errorf("empty address space: pool id %s, want it in the local space", resp.PoolID)
	}
}

// The same RequestPool twice gets the same pool (docker retries a request
// whose reply a crash cut off), counted: it is freed at the last release,
// and the count survives a restart.
func TestIdenticalPoolIsReferenceCounted(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	d := newDriver(t, st, Options{})
	req := helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.6.0.0/24", SubPool: "10.6.0.128/25",
		Options: map[string]string{"a": "b"}}
	first := requestPool(t, d, req)
	// Docker takes the gateway right after each RequestPool.
	if _, err := d.RequestAddress(&helpers.RequestAddressRequest{PoolID: first.PoolID,
		Options: map[string]string{"RequestAddressType": "com.docker.network.gateway"}}); err != nil {
		t.Fatal(err)
	}
	again := requestPool(t, d, req)
	if again.PoolID != first.PoolID || again.Pool != first.Pool {
		t.Fatalf("same request answered %+v, then %+v", first, again)
	}
	// Restart: the count is stored.
	d = newDriver(t, st, Options{})
	if err := d.ReleasePool(&helpers.ReleasePoolRequest{PoolID: first.PoolID}); err != nil {
		t.Fatal(err)
	}
	// One holder left: the pool is still there and still refuses overlaps.
	if _, err := d.RequestAddress(&helpers.RequestAddressRequest{PoolID: first.PoolID}); err != nil {
		t.Fatalf("address from a pool with one holder left: %v", err)
	}
	_, err := d.RequestPool(&helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.6.0.0/23"})
	wantErr(t, err, ErrPoolOverlap, "overlaps pool 10.6.0.0/24")
	if err := d.ReleasePool(&helpers.ReleasePoolRequest{PoolID: first.PoolID}); err != nil {
		t.Fatal(err)
	}
	requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.6.0.0/23"})
}

// A pool stored but never used (no gateway: the create that asked for it
// died with its reply) is adopted by the identical request without a new
// reference, so one release frees it.
func TestUntouchedPoolIsAdoptedNotCounted(t *testing.T) {
	d := newDriver(t, openStore(t, t.TempDir()), Options{})
	req := helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.7.0.0/24"}
	first := requestPool(t, d, req)
	again := requestPool(t, d, req)
	if again.PoolID != first.PoolID {
		t.Fatalf("identical request got %q, want %q", again.PoolID, first.PoolID)
	}
	if err := d.ReleasePool(&helpers.ReleasePoolRequest{PoolID: first.PoolID}); err != nil {
		t.Fatal(err)
	}
	// Gone: the overlapping pool is free to take.
	requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.7.0.0/23"})
}
