package ipam

import (
	"errors"
	"net/netip"
	"sync"
	"testing"

	helpers "github.com/docker/go-plugins-helpers/ipam"

	"github.com/vxbridge/vxbridge/store"
)

// Tests of what must survive: restarts, failed writes, concurrent callers.

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := newDriver(t, st, Options{})
	v4 := requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.1.0.0/24", Options: map[string]string{"k": "v"}}).PoolID
	sub := requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-global", Pool: "10.5.0.0/16", SubPool: "10.5.1.0/24"}).PoolID
	v6 := requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", V6: true}).PoolID
	inUse := map[string]bool{}
	inUse[requestAddr(t, d, v4, "", gatewayOpts)] = true
	inUse[requestAddr(t, d, v4, "10.1.0.9", nil)] = true
	for range 5 {
		inUse[requestAddr(t, d, v4, "", nil)] = true
	}
	released := requestAddr(t, d, v4, "", nil) // .7: the cursor moves past it
	if err := d.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: v4, Address: released}); err != nil {
		t.Fatal(err)
	}
	v6gw := requestAddr(t, d, v6, "", gatewayOpts)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	d2 := newDriver(t, openStore(t, dir), Options{})
	for _, id := range []string{v4, sub, v6} {
		if d2.pool(id) == nil {
			t.Fatalf("pool %s lost across restart", id)
		}
	}
	if got := d2.pool(v4).rec.Options["k"]; got != "v" {
		t.Errorf("pool options lost: %v", d2.pool(v4).rec.Options)
	}
	for range 5 {
		got := requestAddr(t, d2, v4, "", nil)
		if inUse[got] || got == released {
			t.Fatalf("after restart got %s: in use or just released (in use: %v, released %s)", got, inUse, released)
		}
	}
	_, err = d2.RequestAddress(&helpers.RequestAddressRequest{PoolID: v4, Address: "10.1.0.9"})
	wantErr(t, err, ErrAddressInUse, "address 10.1.0.9 is already in use")
	if gw := requestAddr(t, d2, v6, "", gatewayOpts); gw != v6gw {
		t.Errorf("v6 gateway replay after restart = %s, want %s", gw, v6gw)
	}
	_, err = d2.RequestPool(&helpers.RequestPoolRequest{AddressSpace: "vxbridge-global", Pool: "10.5.0.0/24"})
	wantErr(t, err, ErrPoolOverlap, "pool 10.5.0.0/24 overlaps pool 10.5.0.0/16 already in use (pool id vxbridge-global/10.5.0.0/16/10.5.1.0/24)")
}

// TestConcurrentRequests exhausts a /24 from many goroutines: every success
// must be a distinct address.
func TestConcurrentRequests(t *testing.T) {
	d := newDriver(t, openStore(t, t.TempDir()), Options{})
	id := requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.1.0.0/24"}).PoolID
	requestAddr(t, d, id, "", gatewayOpts)

	const workers = 300
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		got       = map[string]int{}
		exhausted int
		other     []error
	)
	for range workers {
		wg.Go(func() {
			resp, err := d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				got[resp.Address]++
			case errors.Is(err, ErrPoolExhausted):
				exhausted++
			default:
				other = append(other, err)
			}
		})
	}
	wg.Wait()
	if len(other) > 0 {
		t.Fatalf("unexpected errors: %v", other)
	}
	for a, n := range got {
		if n > 1 {
			t.Errorf("address %s handed out %d times", a, n)
		}
		if a == "10.1.0.1/24" {
			t.Errorf("gateway handed out")
		}
	}
	if len(got) != 253 || exhausted != workers-253 {
		t.Fatalf("%d distinct addresses and %d exhausted, want 253 and %d", len(got), exhausted, workers-253)
	}
}

func TestDefaultPoolV6(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := newDriver(t, st, Options{})
	resp := requestPool(t, d, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", V6: true})
	p := mp(resp.Pool)
	if p.Bits() != 64 || !mp("fd00::/8").Contains(p.Addr()) {
		t.Fatalf("default v6 pool %s is not a ULA /64", p)
	}
	ula, err := st.Meta(metaULAPrefix)
	if err != nil || !mp(ula).Contains(p.Addr()) || mp(ula).Bits() != 48 {
		t.Fatalf("meta %s = %q, %v; pool %s", metaULAPrefix, ula, err, p)
	}
	gw := requestAddr(t, d, resp.PoolID, "", gatewayOpts)
	if want := netip.PrefixFrom(p.Addr().Next(), 64).String(); gw != want {
		t.Fatalf("v6 gateway = %s, want %s (the subnet-router address is skipped)", gw, want)
	}
	if err := d.ReleasePool(&helpers.ReleasePoolRequest{PoolID: resp.PoolID}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	st2 := openStore(t, dir)
	d2 := newDriver(t, st2, Options{})
	if again := requestPool(t, d2, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", V6: true}); again.Pool != resp.Pool {
		t.Fatalf("v6 default pool after restart = %s, want %s", again.Pool, resp.Pool)
	}
	if second := requestPool(t, d2, helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", V6: true}); second.Pool == resp.Pool || !mp(ula).Contains(mp(second.Pool).Addr()) {
		t.Fatalf("second v6 default pool = %s", second.Pool)
	}
	if other := randomULA(); other.Bits() != 48 || other.Addr().As16()[0] != 0xfd {
		t.Fatalf("randomULA = %s", other)
	}
}

// failingStore fails the write named by failOn once.
type failingStore struct {
	*store.DB
	failOn string
}

var errDisk = errors.New("disk on fire")

func (f *failingStore) fail(op string) error {
	if f.failOn == op {
		f.failOn = ""
		return errDisk
	}
	return nil
}

func (f *failingStore) SavePool(p *store.Pool) error {
	if err := f.fail("SavePool"); err != nil {
		return err
	}
	return f.DB.SavePool(p)
}

func (f *failingStore) SaveAddress(id string, a netip.Addr, k store.AddressKind, next netip.Addr) error {
	if err := f.fail("SaveAddress"); err != nil {
		return err
	}
	return f.DB.SaveAddress(id, a, k, next)
}

func (f *failingStore) DeletePool(id string) error {
	if err := f.fail("DeletePool"); err != nil {
		return err
	}
	return f.DB.DeletePool(id)
}

// TestPersistBeforeReply: a failed write leaves nothing behind in memory.
func TestPersistBeforeReply(t *testing.T) {
	fs := &failingStore{DB: openStore(t, t.TempDir())}
	d := newDriver(t, fs, Options{})
	req := helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.1.0.0/24"}

	fs.failOn = "SavePool"
	if _, err := d.RequestPool(&req); !errors.Is(err, errDisk) {
		t.Fatalf("err = %v", err)
	}
	id := requestPool(t, d, req).PoolID // not refused as overlapping a ghost

	fs.failOn = "SaveAddress"
	if _, err := d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id}); !errors.Is(err, errDisk) {
		t.Fatalf("err = %v", err)
	}
	if got := requestAddr(t, d, id, "", nil); got != "10.1.0.1/24" {
		t.Fatalf("after failed save got %s, want 10.1.0.1/24 again", got)
	}

	fs.failOn = "DeletePool"
	if err := d.ReleasePool(&helpers.ReleasePoolRequest{PoolID: id}); !errors.Is(err, errDisk) {
		t.Fatalf("err = %v", err)
	}
	if d.pool(id) == nil {
		t.Fatal("pool dropped from memory although the store kept it")
	}
}

// TestReleasePoolDuringRequests: an allocation racing ReleasePool must not
// land in the store behind the back of a pool re-created with the same id.
func TestReleasePoolDuringRequests(t *testing.T) {
	st := openStore(t, t.TempDir())
	d := newDriver(t, st, Options{})
	req := helpers.RequestPoolRequest{AddressSpace: "vxbridge-local", Pool: "10.1.0.0/16"}
	id := requestPool(t, d, req).PoolID

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := d.RequestAddress(&helpers.RequestAddressRequest{PoolID: id})
				if err != nil && !errors.Is(err, ErrUnknownPool) {
					t.Errorf("RequestAddress: %v", err)
					return
				}
			}
		})
	}
	for range 20 {
		if err := d.ReleasePool(&helpers.ReleasePoolRequest{PoolID: id}); err != nil {
			t.Fatal(err)
		}
		requestPool(t, d, req)
	}
	close(stop)
	wg.Wait()

	stored, err := st.Addresses(id)
	if err != nil {
		t.Fatal(err)
	}
	mem := d.pool(id).alloc.(*localAllocator)
	mem.mu.Lock()
	defer mem.mu.Unlock()
	if len(stored) != len(mem.taken) {
		t.Fatalf("store holds %d addresses, memory %d", len(stored), len(mem.taken))
	}
	for a := range stored {
		if _, ok := mem.taken[a]; !ok {
			t.Fatalf("address %s is in the store but not in memory", a)
		}
	}
}
