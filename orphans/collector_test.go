package orphans

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	helpers "github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/internal/testutil/fakes"
	"github.com/vxbridge/vxbridge/ipam"
	"github.com/vxbridge/vxbridge/store"
)

// The collectors run here against the real driver and IPAM on a real
// store, with the kernel faked (internal/testutil/fakes), wired as main
// wires them.

const netA = "aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111"

func epID(i int) string { return fmt.Sprintf("%012x%052d", i, i) }

type fixture struct {
	st     *store.DB
	links  *fakes.Links
	d      *driver.Driver
	ip     *ipam.Driver
	c      *Collector
	poolID string
}

// newFixture has network netA on pool 10.10.0.0/24 of vxbridge's IPAM.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := &fixture{st: st, links: fakes.NewLinks()}
	f.d = driver.New(driver.Config{Store: st, Links: f.links, Firewall: fakes.NewFirewall(), Logger: log})
	f.c = New(Config{Records: st, Driver: f.d, Links: f.links, Logger: log})
	if f.ip, err = ipam.New(st, ipam.Options{Logger: log, BeforeRelease: f.c.AddressReleased, PoolReleased: f.c.PoolReleased}); err != nil {
		t.Fatal(err)
	}
	pool, err := f.ip.RequestPool(&helpers.RequestPoolRequest{AddressSpace: ipam.DefaultLocalAddressSpace, Pool: "10.10.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	f.poolID = pool.PoolID
	gw := f.request(t, map[string]string{"RequestAddressType": "com.docker.network.gateway"})
	if err := f.d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: netA,
		Options:  map[string]any{"com.docker.network.generic": map[string]any{}},
		IPv4Data: []*network.IPAMData{{AddressSpace: ipam.DefaultLocalAddressSpace, Pool: pool.Pool, Gateway: gw}}}); err != nil {
		t.Fatal(err)
	}
	return f
}

// request takes an address of the pool, as docker does before
// CreateEndpoint.
func (f *fixture) request(t *testing.T, opts map[string]string) string {
	t.Helper()
	resp, err := f.ip.RequestAddress(&helpers.RequestAddressRequest{PoolID: f.poolID, Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Address
}

// endpoint creates endpoint id on an address of its own and returns it.
func (f *fixture) endpoint(t *testing.T, id string, joined bool) netip.Addr {
	t.Helper()
	addr := f.request(t, nil)
	if _, err := f.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: id,
		Interface: &network.EndpointInterface{Address: addr}}); err != nil {
		t.Fatal(err)
	}
	if joined {
		if _, err := f.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: id, SandboxKey: "/var/run/docker/netns/" + id[:12]}); err != nil {
			t.Fatal(err)
		}
	}
	return netip.MustParsePrefix(addr).Addr()
}

// peerHome puts endpoint id's container end back in the plugin's namespace,
// as docker does when it removes the container.
func (f *fixture) peerHome(id string) {
	f.links.Links["vxc"+id[:12]] = bridge.LinkInfo{Name: "vxc" + id[:12], Kind: "veth"}
}

// present reports which of ids have a record and which addresses are taken.
func (f *fixture) present(t *testing.T, ids ...string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, id := range ids {
		ep, err := f.st.Endpoint(id)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = ep != nil
	}
	return out
}

func (f *fixture) taken(t *testing.T, a netip.Addr) bool {
	t.Helper()
	taken, err := f.st.Addresses(f.poolID)
	if err != nil {
		t.Fatal(err)
	}
	_, ok := taken[a]
	return ok
}

// A joined endpoint whose container end is back in the plugin's namespace
// (docker removed the container while the plugin was down) is deleted with
// its veth and its address freed; a joined one whose end is in its sandbox,
// and one never joined, are kept.
func TestLeftWhileDownCollected(t *testing.T) {
	f := newFixture(t)
	gone, kept, fresh := epID(1), epID(2), epID(3)
	goneAddr := f.endpoint(t, gone, true)
	keptAddr := f.endpoint(t, kept, true)
	f.endpoint(t, fresh, false)
	f.peerHome(gone)
	f.peerHome(fresh) // an endpoint never joined has its end here, as before any Join

	cands, err := f.c.LeftWhileDown()
	if err != nil || len(cands) != 1 || cands[0] != gone {
		t.Fatalf("LeftWhileDown = %v, %v; want only %s", cands, err, gone[:12])
	}
	f.c.collectLeft(f.ip, cands)
	f.links.Flush()
	if got, want := f.present(t, gone, kept, fresh), map[string]bool{gone: false, kept: true, fresh: true}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("records present %v, want %v", got, want)
	}
	if f.links.Names()["vxh"+gone[:12]] || !f.links.Names()["vxh"+kept[:12]] {
		t.Errorf("host veths: collected one present %t, kept one present %t",
			f.links.Names()["vxh"+gone[:12]], f.links.Names()["vxh"+kept[:12]])
	}
	if f.taken(t, goneAddr) || !f.taken(t, keptAddr) {
		t.Errorf("addresses taken: collected one's %t, kept one's %t", f.taken(t, goneAddr), f.taken(t, keptAddr))
	}
	// Idempotent: a second run finds nothing.
	f.c.collectLeft(f.ip, cands)
	if !f.present(t, kept)[kept] {
		t.Error("a second run deleted the kept endpoint")
	}
}

// A candidate whose container end docker moves into its sandbox before the
// second look (a crash right after the Join reply) is kept; one docker
// deleted itself meanwhile is not the collector's, nor is its address
// (docker releases it).
func TestLeftWhileDownLooksTwice(t *testing.T) {
	f := newFixture(t)
	moved, deleted := epID(61), epID(62)
	f.endpoint(t, moved, true)
	deletedAddr := f.endpoint(t, deleted, true)
	f.peerHome(moved)
	f.peerHome(deleted)
	cands, err := f.c.LeftWhileDown()
	if err != nil || len(cands) != 2 {
		t.Fatalf("candidates %v, %v; want both", cands, err)
	}
	delete(f.links.Links, "vxc"+moved[:12]) // docker moved it into the sandbox
	if err := f.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: deleted}); err != nil {
		t.Fatal(err)
	}
	f.c.collectLeft(f.ip, cands)
	if !f.present(t, moved)[moved] {
		t.Error("an endpoint docker moved into its sandbox was collected")
	}
	if !f.taken(t, deletedAddr) {
		t.Error("the address of an endpoint docker deleted itself was freed by the collector")
	}
}

// Docker releasing an address gives up the endpoint never joined that
// still claims it (a CreateEndpoint whose reply a crash cut off); a joined
// one, or one on another pool, stays.
func TestAddressReleased(t *testing.T) {
	f := newFixture(t)
	unjoined, joined := epID(31), epID(32)
	unjoinedAddr := f.endpoint(t, unjoined, false)
	joinedAddr := f.endpoint(t, joined, true)
	f.c.AddressReleased(netip.MustParsePrefix("10.99.0.0/24"), unjoinedAddr) // another pool
	if !f.present(t, unjoined)[unjoined] {
		t.Fatal("an address released from another pool deleted the endpoint never joined")
	}
	for _, a := range []netip.Addr{joinedAddr, unjoinedAddr} {
		if err := f.ip.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: f.poolID, Address: a.String()}); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.present(t, unjoined, joined); got[unjoined] || !got[joined] {
		t.Errorf("after docker released both addresses: records present %v, want only the joined one", got)
	}
}

// Docker releasing a network's pool is done with the network: one it never
// deleted (its create's reply cut off by a crash) goes, unless it has
// endpoints or came from another address space or pool, or was recorded
// without its address space. The IPAM tells at the pool's last release,
// not before.
func TestPoolReleased(t *testing.T) {
	f := newFixture(t)
	space := ipam.DefaultLocalAddressSpace
	const netB = "bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222"
	if err := f.d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: netB, // as recorded before spaces were
		Options:  map[string]any{"com.docker.network.generic": map[string]any{}},
		IPv4Data: []*network.IPAMData{{Pool: "10.20.0.0/24", Gateway: "10.20.0.1/24"}}}); err != nil {
		t.Fatal(err)
	}
	f.c.PoolReleased(space, netip.MustParsePrefix("10.20.0.0/24"))
	if n, _ := f.st.Network(netB); n == nil {
		t.Fatal("network recorded without its address space dropped")
	}
	f.c.PoolReleased("other-space", netip.MustParsePrefix("10.10.0.0/24"))
	f.c.PoolReleased(space, netip.MustParsePrefix("10.10.0.0/25"))
	if n, _ := f.st.Network(netA); n == nil {
		t.Fatal("network dropped on another space's or pool's release")
	}
	f.endpoint(t, epID(41), false)
	f.c.PoolReleased(space, netip.MustParsePrefix("10.10.0.0/24"))
	if n, _ := f.st.Network(netA); n == nil {
		t.Fatal("network with an endpoint dropped")
	}
	if err := f.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: epID(41)}); err != nil {
		t.Fatal(err)
	}
	// Through the IPAM: the pool held twice (the same request again) is
	// freed at its second release only.
	if _, err := f.ip.RequestPool(&helpers.RequestPoolRequest{AddressSpace: space, Pool: "10.10.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false} {
		if err := f.ip.ReleasePool(&helpers.ReleasePoolRequest{PoolID: f.poolID}); err != nil {
			t.Fatal(err)
		}
		if n, _ := f.st.Network(netA); (n != nil) != want {
			t.Errorf("after release %d of the pool: network kept %t, want %t", i+1, n != nil, want)
		}
	}
}

// One pass (grace 0: everything is old enough) deletes the endpoint never
// joined and frees its address and the address no endpoint holds; the
// joined endpoint and its address stay.
func TestPass(t *testing.T) {
	f := newFixture(t)
	unjoined, joined := epID(51), epID(52)
	unjoinedAddr := f.endpoint(t, unjoined, false)
	joinedAddr := f.endpoint(t, joined, true)
	lost := netip.MustParsePrefix(f.request(t, nil)).Addr() // a reply a crash cut off
	var tr Tracker
	if err := f.c.pass(&tr, f.ip, 0); err != nil {
		t.Fatal(err)
	}
	if got := f.present(t, unjoined, joined); got[unjoined] || !got[joined] {
		t.Errorf("records present %v, want only the joined one", got)
	}
	for a, want := range map[netip.Addr]bool{unjoinedAddr: false, lost: false, joinedAddr: true} {
		if f.taken(t, a) != want {
			t.Errorf("address %s taken %t, want %t", a, !want, want)
		}
	}
}

// joinFirst is the driver with docker's Join arriving just before each
// DeleteEndpointIf: between the pass's listing and its delete.
type joinFirst struct {
	*driver.Driver
	t *testing.T
}

func (j joinFirst) DeleteEndpointIf(id string, orphan func(*store.Endpoint) (bool, error)) (*store.Endpoint, error) {
	if _, err := j.Join(&network.JoinRequest{NetworkID: netA, EndpointID: id, SandboxKey: "/x"}); err != nil {
		j.t.Fatal(err)
	}
	return j.Driver.DeleteEndpointIf(id, orphan)
}

// A Join that comes after the pass listed an endpoint never joined, but
// before its delete, keeps it: the delete looks again under the lock.
func TestPassLosesToAJoin(t *testing.T) {
	f := newFixture(t)
	id := epID(91)
	addr := f.endpoint(t, id, false)
	f.c.drv = joinFirst{Driver: f.d, t: t}
	var tr Tracker
	if err := f.c.pass(&tr, f.ip, 0); err != nil {
		t.Fatal(err)
	}
	if !f.present(t, id)[id] || !f.taken(t, addr) {
		t.Errorf("an endpoint joined before its delete was collected (record %t, address taken %t)", f.present(t, id)[id], f.taken(t, addr))
	}
}

// A collected endpoint's address that another record also holds (two
// records on one address: docker released it and handed it on) stays
// taken.
func TestCollectedAddressHeldByAnotherStays(t *testing.T) {
	f := newFixture(t)
	unjoined, joined := epID(95), epID(96)
	addr := f.endpoint(t, unjoined, false)
	if _, err := f.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: joined,
		Interface: &network.EndpointInterface{Address: netip.PrefixFrom(addr, 24).String()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: joined, SandboxKey: "/x"}); err != nil {
		t.Fatal(err)
	}
	var tr Tracker
	if err := f.c.pass(&tr, f.ip, 0); err != nil {
		t.Fatal(err)
	}
	if got := f.present(t, unjoined, joined); got[unjoined] {
		t.Fatalf("records present %v: the endpoint never joined was not collected", got)
	}
	if !f.taken(t, addr) {
		t.Error("the address another endpoint holds was freed")
	}
}
