package driver

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/internal/testutil/fakes"
	"github.com/vxbridge/vxbridge/ownership"
	"github.com/vxbridge/vxbridge/ownership/mark"
	"github.com/vxbridge/vxbridge/store"
)

// Ownership at the driver tier: a state file's reconcile deletes only what
// that state made (marks.go), whatever the kernel holds of other state
// files; start-up's decisions (ownership.Action) adopt, purge or keep.

const (
	identA = "aaaaaaaaaaaa"
	identB = "bbbbbbbbbbbb"
)

// kernel is a fake kernel shared by drivers on different state files, as
// a host's kernel outlives the state file in use.
type kernel struct {
	links *fakes.Links
	fw    *fakes.Firewall
}

func newKernel() *kernel { return &kernel{links: fakes.NewLinks(), fw: fakes.NewFirewall()} }

// driverOn opens a new state file with identity (as store.Open would give
// one) and a driver on it over k. legacy: the file predates identities.
func (k *kernel) driverOn(t *testing.T, identity string, legacy bool) (*Driver, *store.DB) {
	t.Helper()
	db, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	k.fw.SetOwner(identity)
	d := New(Config{Store: db, Links: k.links, Firewall: k.fw, Identity: identity, LegacyOwned: legacy,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return d, db
}

// populate makes network netA with two endpoints, one joined with a
// published port, through d's docker calls.
func populate(t *testing.T, d *Driver, k *kernel) {
	t.Helper()
	if err := d.CreateNetwork(createReq(netA, "10.10.0.0/24", "10.10.0.1/24", map[string]interface{}{OptICC: "false"})); err != nil {
		t.Fatal(err)
	}
	for i, joined := range []bool{true, false} {
		id := epID(i + 1)
		addr := netip.MustParsePrefix("10.10.0.0/24")
		addr = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 10, 0, byte(i + 2)}), addr.Bits())
		_, err := d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: id,
			Interface: &network.EndpointInterface{Address: addr.String()}})
		if err != nil {
			t.Fatal(err)
		}
		if !joined {
			continue
		}
		if _, err := d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: id, SandboxKey: "/var/run/docker/netns/x"}); err != nil {
			t.Fatal(err)
		}
		host := hostVethPrefix + short(id)
		mac := k.links.Veths[host].MAC
		// docker moves the container end into the container and names it eth0
		k.links.Peers = map[string]bridge.Peer{host: {Name: "eth0", MAC: mac, Addrs: []netip.Prefix{addr}, Elsewhere: true}}
	}
}

func aliases(l *fakes.Links) []string {
	var out []string
	for _, info := range l.Links {
		out = append(out, info.Name+"="+info.Alias)
	}
	sort.Strings(out)
	return out
}

// The reproduction: a network and a joined endpoint made from one
// state file; a reconcile on a new, empty state file over the same kernel
// used to delete both links. Now it deletes nothing of another state's.
func TestReconcileOnANewStateFileDeletesNothing(t *testing.T) {
	k := newKernel()
	old, _ := k.driverOn(t, identA, false)
	populate(t, old, k)
	before, rules := aliases(k.links), k.fw.Snapshot()

	fresh, _ := k.driverOn(t, identB, false)
	rep, err := fresh.Reconcile()
	if err != nil {
		t.Fatal(err)
	}
	if after := aliases(k.links); !slices.Equal(after, before) {
		t.Errorf("links changed:\nbefore %v\nafter  %v", before, after)
	}
	if k.fw.Snapshot() != rules {
		t.Errorf("firewall changed:\nbefore %s\nafter  %s", rules, k.fw.Snapshot())
	}
	if len(rep.RemovedLinks) != 0 || len(rep.Kept) != 4 || rep.KeptOwn != 0 {
		t.Errorf("report: removed %v, kept %v (%d own)", rep.RemovedLinks, rep.Kept, rep.KeptOwn)
	}
	census, err := fresh.Census()
	if err != nil {
		t.Fatal(err)
	}
	// bridge, two veths, the network's rules
	if census[identA] != 4 || len(census) != 1 {
		t.Errorf("census %v, want 4 objects of state %s", census, identA)
	}
}

// Objects without identity are this state's only when its file predates
// identities (and holds records): then those a record claims are taken
// over, the others removed; otherwise they are left alone.
func TestObjectsFromBeforeIdentities(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		k := newKernel()
		old, db := k.driverOn(t, "", false) // the marks of before identities
		populate(t, old, k)
		// What a crash left: a veth no record claims.
		k.links.Links["vxhleft"] = bridge.LinkInfo{Name: "vxhleft", Alias: mark.Alias("", mark.Endpoint, "left"), Kind: "veth"}

		k.fw.SetOwner(identA)
		d := New(Config{Store: db, Links: k.links, Firewall: k.fw, Identity: identA, LegacyOwned: legacy,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		rep, err := d.Reconcile()
		if legacy != (err == nil) {
			// Without taking them over, the records' own links are
			// another state's: ensuring them fails, and says so.
			t.Errorf("legacy=%v: Reconcile = %v", legacy, err)
		}
		_, left := k.links.Links["vxhleft"]
		br := k.links.Links["vxb-aaaaaaaaaaa"]
		switch {
		case legacy && (left || br.Alias != mark.Alias(identA, mark.Net, netA) || len(rep.TakenOver) != 3):
			t.Errorf("legacy state: leftover kept %v, bridge alias %q, taken over %v", left, br.Alias, rep.TakenOver)
		case !legacy && (!left || br.Alias != mark.Alias("", mark.Net, netA) || len(rep.TakenOver) != 0):
			t.Errorf("state with its own identity: leftover removed %v, bridge alias %q, taken over %v", !left, br.Alias, rep.TakenOver)
		}
		if legacy && k.fw.Nets[netA].Owner != identA {
			t.Errorf("legacy state: the network's rules are %q's", k.fw.Nets[netA].Owner)
		}
	}
}

// A state file that went back in time (KeepUnclaimed) keeps its own
// unclaimed objects; Purge removes every unclaimed one, whoever's.
func TestKeepAndPurge(t *testing.T) {
	k := newKernel()
	a, dbA := k.driverOn(t, identA, false)
	populate(t, a, k)
	if err := a.ProgramExternalConnectivity(&network.ProgramExternalConnectivityRequest{NetworkID: netA, EndpointID: epID(1),
		Options: portmap(":8080:80/tcp")}); err != nil {
		t.Fatal(err)
	}
	if err := dbA.DeleteEndpoint(epID(1)); err != nil { // the rollback lost this record
		t.Fatal(err)
	}
	k.links.Links["vxhother"] = bridge.LinkInfo{Name: "vxhother", Alias: mark.Alias(identB, mark.Endpoint, "x"), Kind: "veth"}

	rep, err := a.Start(ownership.KeepUnclaimed)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k.links.Links[hostVethPrefix+short(epID(1))]; !ok || rep.KeptOwn != 2 || len(rep.RemovedLinks) != 0 {
		t.Errorf("keep: veth kept %v, kept %v (%d own), removed %v", ok, rep.Kept, rep.KeptOwn, rep.RemovedLinks)
	}
	if _, ok := k.fw.Ports[epID(1)]; !ok {
		t.Error("keep: the lost endpoint's published ports were removed")
	}
	if rep, _ := a.Reconcile(); rep.KeptOwn != 2 {
		t.Errorf("keep holds while the driver runs: later pass kept %v", rep.Kept)
	}

	a.owners.keep = false
	rep, err = a.Start(ownership.Purge)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k.links.Links["vxhother"]; ok || len(rep.RemovedLinks) != 2 {
		t.Errorf("purge: removed %v", rep.RemovedLinks)
	}
	if _, ok := k.fw.Ports[epID(1)]; ok {
		t.Error("purge: the lost endpoint's published ports stayed")
	}
}

// Adopt makes the records of what the kernel shows again, gives it this
// state's identity, and docker's deletes then leave nothing.
func TestAdoptMakesTheRecordsAgain(t *testing.T) {
	k := newKernel()
	old, oldDB := k.driverOn(t, identA, false)
	populate(t, old, k)
	if err := old.ProgramExternalConnectivity(&network.ProgramExternalConnectivityRequest{NetworkID: netA, EndpointID: epID(1),
		Options: portmap(":8080:80/tcp")}); err != nil {
		t.Fatal(err)
	}
	wantNet, _ := oldDB.Network(netA)
	wantEps, _ := oldDB.Endpoints()
	// The rules hold the mappings the kernel serves; the IPv6 host port
	// of an IPv4 container was the relay's alone.
	published := slices.DeleteFunc(slices.Clone(wantEps[0].Ports), func(m store.PortMapping) bool { return m.HostIP.Is6() })
	if len(published) != 1 {
		t.Fatalf("published %v", wantEps[0].Ports)
	}

	d, db := k.driverOn(t, identB, false)
	rep, err := d.Start(ownership.Adopt)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Adopted) != 3 || len(rep.RemovedLinks) != 0 {
		t.Errorf("adopted %v, removed %v", rep.Adopted, rep.RemovedLinks)
	}
	n, _ := db.Network(netA)
	if n == nil || n.Bridge != wantNet.Bridge || n.ICC != wantNet.ICC || n.Masquerade != wantNet.Masquerade ||
		n.Internal != wantNet.Internal || !slices.Equal(subnetList(n), subnetList(wantNet)) || n.IPv4[0].Gateway != wantNet.IPv4[0].Gateway {
		t.Errorf("adopted network %+v\nwant             %+v", n, wantNet)
	}
	eps, _ := db.Endpoints()
	if len(eps) != len(wantEps) {
		t.Fatalf("adopted %d endpoints, want %d", len(eps), len(wantEps))
	}
	for i, ep := range eps {
		w := wantEps[i]
		if ep.ID != w.ID || ep.HostVeth != w.HostVeth || ep.PeerVeth != w.PeerVeth || ep.MAC != w.MAC || ep.IPv4 != w.IPv4 || ep.Joined != w.Joined {
			t.Errorf("adopted endpoint %+v\nwant              %+v", ep, w)
		}
	}
	if !slices.Equal(eps[0].Ports, published) {
		t.Errorf("adopted ports %v, want %v", eps[0].Ports, published)
	}
	for _, a := range aliases(k.links) {
		if !strings.Contains(a, identB) {
			t.Errorf("link not taken over: %s", a)
		}
	}
	if k.fw.Nets[netA].Owner != identB || k.fw.Ports[epID(1)].Owner != identB {
		t.Errorf("rules not taken over: %s", k.fw.Snapshot())
	}

	for _, ep := range eps {
		if err := d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: ep.ID}); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}); err != nil {
		t.Fatal(err)
	}
	k.links.Flush()
	if len(k.links.Links) != 0 || len(k.fw.Nets)+len(k.fw.Ports) != 0 {
		t.Errorf("docker's deletes left links %v, rules %s", aliases(k.links), k.fw.Snapshot())
	}
}

// foundAddrs reads an endpoint's addresses from its container end, or,
// before docker configured it, from the MAC vxbridge made of its address.
func TestFoundAddrs(t *testing.T) {
	n := &store.Network{IPv4: []store.Subnet{{Pool: netip.MustParsePrefix("10.10.0.0/24")}},
		IPv6: []store.Subnet{{Pool: netip.MustParsePrefix("fd00::/64")}}}
	mac, _ := net.ParseMAC("76:78:0a:0a:00:07")
	for _, c := range []struct {
		peer   bridge.Peer
		v4, v6 string
	}{
		{bridge.Peer{MAC: mac, Addrs: []netip.Prefix{netip.MustParsePrefix("10.10.0.9/24"), netip.MustParsePrefix("fd00::9/64")}}, "10.10.0.9/24", "fd00::9/64"},
		{bridge.Peer{MAC: mac}, "10.10.0.7/24", "invalid Prefix"},
		{bridge.Peer{MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}}, "invalid Prefix", "invalid Prefix"},
		{bridge.Peer{MAC: mac, Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.1.1/24")}}, "10.10.0.7/24", "invalid Prefix"},
	} {
		v4, v6 := foundAddrs(n, &c.peer)
		if v4.String() != c.v4 || v6.String() != c.v6 {
			t.Errorf("foundAddrs(%v) = %v, %v; want %s, %s", c.peer, v4, v6, c.v4, c.v6)
		}
	}
}
