package ipam

import (
	"net/netip"
	"testing"

	helpers "github.com/docker/go-plugins-helpers/ipam"
)

// An adopted network's pool is made again at docker's first address
// request for it, with the records' addresses taken; a pool id of no
// adopted network stays unknown.
func TestAdoptedNetworksPoolIsMadeAgain(t *testing.T) {
	adopted := netip.MustParsePrefix("10.50.0.0/24")
	hook := func(p netip.Prefix) (gws, eps []netip.Addr, ok bool) {
		if p != adopted {
			return nil, nil, false
		}
		return []netip.Addr{netip.MustParseAddr("10.50.0.1")}, []netip.Addr{netip.MustParseAddr("10.50.0.2"), netip.MustParseAddr("10.50.0.3")}, true
	}
	dir := t.TempDir()
	d := newDriver(t, openStore(t, dir), Options{AdoptedPool: hook})
	id := "vxbridge-local/10.50.0.0/24"
	got := requestAddr(t, d, id, "", nil)
	if got != "10.50.0.4/24" {
		t.Errorf("first address of the adopted pool %s, want 10.50.0.4/24 (gateway and endpoints taken)", got)
	}
	_, err := d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id, Address: "10.50.0.2"})
	wantErr(t, err, ErrAddressInUse, "10.50.0.2")
	_, err = d.RequestAddress(&helpers.RequestAddressRequest{PoolID: "vxbridge-local/10.51.0.0/24"})
	wantErr(t, err, ErrUnknownPool, "10.51.0.0/24")
	// It is an ordinary pool from now on: released with the network.
	if err := d.ReleasePool(&helpers.ReleasePoolRequest{PoolID: id}); err != nil {
		t.Fatal(err)
	}
	if p := d.pool(id); p != nil {
		t.Errorf("pool still held after its release: %+v", p.rec)
	}
}
