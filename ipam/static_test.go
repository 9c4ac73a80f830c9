package ipam

import (
	"net/netip"
	"testing"

	helpers "github.com/docker/go-plugins-helpers/ipam"

	"github.com/vxbridge/vxbridge/store"
)

// Specific addresses: --aux-address reservations (asked for before the
// network is stored) are KindAux, an endpoint's --ip (after) is
// KindStatic, and records written before KindStatic existed are migrated.

func kindOf(t *testing.T, st Store, poolID, addr string) store.AddressKind {
	t.Helper()
	taken, err := st.Addresses(poolID)
	if err != nil {
		t.Fatal(err)
	}
	return taken[netip.MustParseAddr(addr)]
}

// saveNetwork stores what the network driver's CreateNetwork stores.
func saveNetwork(t *testing.T, st *store.DB, id, pool string, aux map[string]netip.Addr) {
	t.Helper()
	n := &store.Network{ID: id, Bridge: "vxb-" + id, IPv4: []store.Subnet{{Pool: netip.MustParsePrefix(pool), Aux: aux}}}
	if err := st.SaveNetwork(n); err != nil {
		t.Fatal(err)
	}
}

func TestSpecificAddressKinds(t *testing.T) {
	st := openStore(t, t.TempDir())
	d := newDriver(t, st, Options{})
	id := requestPool(t, d, helpers.RequestPoolRequest{Pool: "10.1.0.0/24"}).PoolID

	// docker network create --aux-address a=10.1.0.2 --aux-address b=10.1.0.3:
	// gateway, then the aux reservations, then CreateNetwork stores the network.
	requestAddr(t, d, id, "", gatewayOpts)
	requestAddr(t, d, id, "10.1.0.2", nil)
	requestAddr(t, d, id, "10.1.0.3", nil)
	saveNetwork(t, st, "n1", "10.1.0.0/24", map[string]netip.Addr{"a": netip.MustParseAddr("10.1.0.2"), "b": netip.MustParseAddr("10.1.0.3")})
	// Containers: one with --ip, one dynamic.
	requestAddr(t, d, id, "10.1.0.50", nil)
	dyn := netip.MustParsePrefix(requestAddr(t, d, id, "", nil)).Addr().String()

	for addr, want := range map[string]store.AddressKind{
		"10.1.0.1": store.KindGateway, "10.1.0.2": store.KindAux, "10.1.0.3": store.KindAux,
		"10.1.0.50": store.KindStatic, dyn: store.KindEndpoint,
	} {
		if got := kindOf(t, st, id, addr); got != want {
			t.Errorf("%s stored as %q, want %q", addr, got, want)
		}
	}
	// A listed aux address freed and asked for again (docker never does
	// this after network create, but the network says it is aux) stays aux.
	if err := d.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: id, Address: "10.1.0.3"}); err != nil {
		t.Fatal(err)
	}
	requestAddr(t, d, id, "10.1.0.3", nil)
	if got := kindOf(t, st, id, "10.1.0.3"); got != store.KindAux {
		t.Errorf("listed aux address asked for again stored as %q, want aux", got)
	}
	// A static address is taken like any other, and freed by ReleaseAddress.
	_, err := d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id, Address: "10.1.0.50"})
	wantErr(t, err, ErrAddressInUse, "address 10.1.0.50 is already in use in pool 10.1.0.0/24 (static)")
	if err := d.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: id, Address: "10.1.0.50"}); err != nil {
		t.Fatal(err)
	}
	if got := kindOf(t, st, id, "10.1.0.50"); got != "" {
		t.Errorf("released static address still stored as %q", got)
	}
	// Another pool without a stored network: a specific address is aux.
	other := requestPool(t, d, helpers.RequestPoolRequest{Pool: "10.2.0.0/24"}).PoolID
	requestAddr(t, d, other, "10.2.0.9", nil)
	if got := kindOf(t, st, other, "10.2.0.9"); got != store.KindAux {
		t.Errorf("address of a pool with no network stored as %q, want aux", got)
	}
}

// storeOnly hides the network records of a store: the driver then cannot
// tell --ip from --aux-address and keeps the old behaviour.
type storeOnly struct{ Store }

func TestSpecificAddressWithoutNetworkRecords(t *testing.T) {
	st := openStore(t, t.TempDir())
	d := newDriver(t, storeOnly{st}, Options{})
	id := requestPool(t, d, helpers.RequestPoolRequest{Pool: "10.1.0.0/24"}).PoolID
	saveNetwork(t, st, "n1", "10.1.0.0/24", nil)
	requestAddr(t, d, id, "10.1.0.50", nil)
	if got := kindOf(t, st, id, "10.1.0.50"); got != store.KindAux {
		t.Errorf("stored as %q, want aux from a store without network records", got)
	}
}

// TestAuxMigration: a state file from before KindStatic holds an --ip as
// aux. At start the aux address a stored endpoint holds becomes static; a
// listed --aux-address and an aux address no endpoint holds stay aux; all
// stay taken; a second start changes nothing.
func TestAuxMigration(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := newDriver(t, st, Options{})
	id := requestPool(t, d, helpers.RequestPoolRequest{Pool: "10.1.0.0/24"}).PoolID
	v6 := requestPool(t, d, helpers.RequestPoolRequest{Pool: "fd01::/64", V6: true}).PoolID
	requestAddr(t, d, id, "", gatewayOpts)
	// The old records, written as the old driver wrote them.
	for _, a := range []struct{ pool, addr string }{{id, "10.1.0.2"}, {id, "10.1.0.50"}, {id, "10.1.0.60"}, {v6, "fd01::50"}} {
		if err := st.SaveAddress(a.pool, netip.MustParseAddr(a.addr), store.KindAux, netip.Addr{}); err != nil {
			t.Fatal(err)
		}
	}
	n := &store.Network{ID: "n1", Bridge: "vxb-n1",
		IPv4: []store.Subnet{{Pool: netip.MustParsePrefix("10.1.0.0/24"), Aux: map[string]netip.Addr{"a": netip.MustParseAddr("10.1.0.2")}}},
		IPv6: []store.Subnet{{Pool: netip.MustParsePrefix("fd01::/64")}}}
	if err := st.SaveNetwork(n); err != nil {
		t.Fatal(err)
	}
	ep := &store.Endpoint{ID: "e1", NetworkID: "n1", HostVeth: "vxh1",
		IPv4: netip.MustParsePrefix("10.1.0.50/24"), IPv6: netip.MustParsePrefix("fd01::50/64")}
	if err := st.SaveEndpoint(ep); err != nil {
		t.Fatal(err)
	}
	// An endpoint of a network that is not stored does not count.
	if err := st.SaveEndpoint(&store.Endpoint{ID: "e2", NetworkID: "gone", IPv4: netip.MustParsePrefix("10.1.0.60/24")}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	for round := range 2 {
		st := openStore(t, dir)
		d := newDriver(t, st, Options{})
		for _, c := range []struct {
			pool, addr string
			want       store.AddressKind
		}{
			{id, "10.1.0.1", store.KindGateway},
			{id, "10.1.0.2", store.KindAux},
			{id, "10.1.0.50", store.KindStatic},
			{id, "10.1.0.60", store.KindAux},
			{v6, "fd01::50", store.KindStatic},
		} {
			if got := kindOf(t, st, c.pool, c.addr); got != c.want {
				t.Errorf("start %d: %s stored as %q, want %q", round+1, c.addr, got, c.want)
			}
			if got := d.pool(c.pool).alloc.(*localAllocator).taken[netip.MustParseAddr(c.addr)]; got != c.want {
				t.Errorf("start %d: %s held in memory as %q, want %q", round+1, c.addr, got, c.want)
			}
			_, err := d.RequestAddress(&helpers.RequestAddressRequest{PoolID: c.pool, Address: c.addr})
			wantErr(t, err, ErrAddressInUse, "already in use")
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
