package store

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func open(t *testing.T, dir string) *DB {
	t.Helper()
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestRecordsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	n := &Network{ID: "n1", Bridge: "vxb-n1", MTU: 1400, ICC: true,
		IPv4: []Subnet{{Pool: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParsePrefix("10.0.0.1/24"),
			Aux: map[string]netip.Addr{"r": netip.MustParseAddr("10.0.0.2")}}}}
	ep := &Endpoint{ID: "e1", NetworkID: "n1", HostVeth: "vxhe1", MAC: "02:00:00:00:00:01", IPv4: netip.MustParsePrefix("10.0.0.5/24"), Joined: true,
		Ports: []PortMapping{{Proto: "udp", HostIP: netip.IPv6Unspecified(), HostPort: 5353, ContainerIP: netip.MustParseAddr("10.0.0.5"), ContainerPort: 53}}}
	p := &Pool{ID: "p1", Prefix: netip.MustParsePrefix("10.0.0.0/24"), Range: netip.MustParsePrefix("10.0.0.0/25")}
	for _, err := range []error{db.SaveNetwork(n), db.SaveEndpoint(ep), db.SavePool(p),
		db.SaveAddress("p1", netip.MustParseAddr("10.0.0.5"), KindEndpoint, netip.MustParseAddr("10.0.0.6")),
		db.SetMeta("k", "v")} {
		if err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	db = open(t, dir)
	defer db.Close()
	gotN, _ := db.Network("n1")
	if gotN == nil || gotN.MTU != 1400 || gotN.IPv4[0].Aux["r"] != netip.MustParseAddr("10.0.0.2") || gotN.IPv4[0].Gateway != n.IPv4[0].Gateway {
		t.Errorf("network = %+v", gotN)
	}
	gotEp, _ := db.Endpoint("e1")
	if gotEp == nil || !reflect.DeepEqual(gotEp, ep) {
		t.Errorf("endpoint = %+v", gotEp)
	}
	pools, _ := db.Pools()
	if len(pools) != 1 || pools[0].Next != netip.MustParseAddr("10.0.0.6") || pools[0].Range != p.Range {
		t.Errorf("pools = %+v", pools)
	}
	addrs, _ := db.Addresses("p1")
	if addrs[netip.MustParseAddr("10.0.0.5")] != KindEndpoint || len(addrs) != 1 {
		t.Errorf("addresses = %v", addrs)
	}
	if v, _ := db.Meta("k"); v != "v" {
		t.Errorf("meta = %q", v)
	}
}

func TestDeletesOfMissingRecordsSucceed(t *testing.T) {
	db := open(t, t.TempDir())
	defer db.Close()
	for _, err := range []error{db.DeleteNetwork("x"), db.DeleteEndpoint("x"), db.DeletePool("x"),
		db.DeleteAddress("x", netip.MustParseAddr("10.0.0.1"))} {
		if err != nil {
			t.Error(err)
		}
	}
	if n, err := db.Network("x"); n != nil || err != nil {
		t.Errorf("Network(missing) = %v, %v", n, err)
	}
}

func TestDeletePoolDropsItsAddresses(t *testing.T) {
	db := open(t, t.TempDir())
	defer db.Close()
	p := &Pool{ID: "p", Prefix: netip.MustParsePrefix("10.0.0.0/24")}
	if err := db.SavePool(p); err != nil {
		t.Fatal(err)
	}
	if err := db.SaveAddress("p", netip.MustParseAddr("10.0.0.9"), KindGateway, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if err := db.DeletePool("p"); err != nil {
		t.Fatal(err)
	}
	if err := db.SavePool(p); err != nil {
		t.Fatal(err)
	}
	if addrs, _ := db.Addresses("p"); len(addrs) != 0 {
		t.Errorf("addresses survived their pool: %v", addrs)
	}
	if err := db.SaveAddress("nope", netip.MustParseAddr("10.0.0.9"), KindGateway, netip.Addr{}); err == nil {
		t.Error("address saved into a pool that does not exist")
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	defer db.Close()
	start := time.Now()
	_, err := Open(dir, Options{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "another vxbridge") {
		t.Fatalf("err = %v, want ErrLocked naming the cause", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second open took %v", d)
	}
}
