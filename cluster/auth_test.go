package cluster

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vxbridge/vxbridge/internal/testutil/etcdtest"
)

// authCluster is etcd with TLS and authentication on, and an identity per
// host made by Admin as vxbridge cluster add-host makes them.
type authCluster struct {
	srv       *etcdtest.Server
	tls       TLSFiles
	passwords map[string]string
}

func newAuthCluster(t *testing.T, hosts ...string) *authCluster {
	t.Helper()
	srv := etcdtest.StartTLS(t)
	ac := &authCluster{srv: srv, tls: TLSFiles{CA: srv.Certs.CA}, passwords: map[string]string{}}
	a := ac.admin(t, "", "")
	ctx := context.Background()
	for _, h := range hosts {
		ac.passwords[h] = "pw-" + h
		if created, err := a.AddHost(ctx, h, ac.passwords[h], false); err != nil || !created {
			t.Fatalf("add host %s: %t %v", h, created, err)
		}
	}
	if err := a.EnableAuth(ctx, "rootpw"); err != nil {
		t.Fatal(err)
	}
	a.Close()
	return ac
}

func (ac *authCluster) admin(t *testing.T, user, password string) *Admin {
	t.Helper()
	tlsCfg, err := ClientTLS([]string{ac.srv.Endpoint}, ac.tls, user)
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAdmin(AdminConfig{Endpoints: []string{ac.srv.Endpoint}, TLS: tlsCfg, Username: user, Password: password, Prefix: "/test"})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// host runs host id's client with its own identity.
func (ac *authCluster) host(t *testing.T, id, vtep string) *testHost {
	t.Helper()
	tlsCfg, err := ClientTLS([]string{ac.srv.Endpoint}, ac.tls, HostUser(id))
	if err != nil {
		t.Fatal(err)
	}
	return runHost(t, Config{Endpoints: []string{ac.srv.Endpoint}, TLS: tlsCfg, Prefix: "/test", HostID: id, TTL: testTTL,
		Username: HostUser(id), Password: ac.passwords[id]}, vtep)
}

// raw is a plain etcd client with host id's identity: what an attacker who
// took that host can do with etcd.
func (ac *authCluster) raw(t *testing.T, id string) *clientv3.Client {
	t.Helper()
	tlsCfg, err := ClientTLS([]string{ac.srv.Endpoint}, ac.tls, HostUser(id))
	if err != nil {
		t.Fatal(err)
	}
	c := clientConfig(Config{Endpoints: []string{ac.srv.Endpoint}, TLS: tlsCfg})
	c.Username, c.Password = HostUser(id), ac.passwords[id]
	cli, err := clientv3.New(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestHostCannotSpeakForAnother: with etcd auth on, host ha's identity can
// neither write nor delete any of host hb's own records, nor make up a
// host; what it writes for hb in a network's prefix (forged records, a
// forged membership, a deletion, a record put on hb's lease through a
// transaction) is not believed by hb's peers. Each host's own work (its
// records, a network claim, address blocks) goes through with its own
// identity.
func TestHostCannotSpeakForAnother(t *testing.T) {
	ac := newAuthCluster(t, "ha", "hb", "hc")
	a, b, c := ac.host(t, "ha", "192.0.2.1"), ac.host(t, "hb", "192.0.2.2"), ac.host(t, "hc", "192.0.2.3")
	ctx := context.Background()
	for _, h := range []*testHost{a, b, c} {
		if err := h.c.ClaimNetwork(ctx, Network{VNI: 42, Subnets: pfx("10.1.0.0/24")}); err != nil {
			t.Fatalf("%s: claim network with its own identity: %v", h.c.host, err)
		}
	}
	b.c.Publish(ep("e1", 42, "10.1.0.2"))
	waitSynced(t, b.c, 5*time.Second)
	if ok, err := b.c.ClaimBlock(ctx, PoolKey(netip.MustParsePrefix("10.1.0.0/24")), pfx("10.1.0.0/26")[0]); !ok || err != nil {
		t.Fatalf("hb: claim a block with its own identity: %t %v", ok, err)
	}
	s := follow(t, c.c, 42)
	const truth = "e/hb/e1@10.1.0.2 m/ha@192.0.2.1 m/hb@192.0.2.2 m/hc@192.0.2.3"
	s.until(t, 5*time.Second, truth)

	evil := ac.raw(t, "ha")
	k := a.c.k
	hbLease := clientv3.LeaseID(mustKV(t, evil, k.host("hb")).Lease)
	denied := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Errorf("ha %s: %v, want permission denied", what, err)
		}
	}
	forgedEP := `{"id":"e1","host":"hb","vni":42,"mac":"02:00:00:00:00:01","ipv4":"10.1.0.66"}`
	_, err := evil.Put(ctx, k.host("hb"), `{"id":"hb","vtep":"192.0.2.66","port":4789,"layout":2}`)
	denied("rewrites hb's host record", err)
	_, err = evil.Delete(ctx, k.host("hb"))
	denied("deletes hb's host record", err)
	_, err = evil.Put(ctx, k.endpoint("hb", "e1"), forgedEP)
	denied("rewrites hb's endpoint copy", err)
	_, err = evil.Delete(ctx, k.hostEndpoints("hb"), clientv3.WithPrefix())
	denied("deletes hb's endpoint copies", err)
	_, err = evil.Put(ctx, k.membership("hb", 7), `{"host":"hb","vtep":"192.0.2.2"}`)
	denied("makes hb a member of another network", err)
	_, err = evil.Put(ctx, k.membership("hz", 42), `{"host":"hz","vtep":"192.0.2.9"}`)
	denied("makes up host hz's membership", err)
	_, err = evil.Put(ctx, k.host("hz"), `{"id":"hz","vtep":"192.0.2.9"}`)
	denied("makes up host hz", err)
	_, err = evil.Revoke(ctx, hbLease)
	denied("revokes hb's lease", err)
	_, err = evil.Put(ctx, "/elsewhere", "x")
	denied("writes outside vxbridge's prefix", err)

	// What etcd lets any host of a network write there, readers refuse.
	if _, err := evil.Put(ctx, k.netEndpoint(42, "hb", "e1"), forgedEP); err != nil {
		t.Fatal(err)
	}
	if _, err := evil.Put(ctx, k.netMember(42, "hz"), `{"host":"hz","vtep":"192.0.2.9","port":4789}`); err != nil {
		t.Fatal(err)
	}
	if _, err := evil.Delete(ctx, k.netMember(42, "hb")); err != nil {
		t.Fatal(err)
	}
	// etcd checks who may attach a key to a lease on Put, not in a
	// transaction: ha puts a record on hb's lease.
	if _, err := evil.Txn(ctx).Then(clientv3.OpPut(k.netEndpoint(42, "hb", "e2"), forgedEP, clientv3.WithLease(hbLease))).Commit(); err != nil {
		t.Fatal(err)
	}
	s.waitSeenForged(t, 5*time.Second,
		"e/hb/e1: differs from host hb's own copy",
		"e/hb/e2: host hb has no such record of its own",
		"m/hb: deleted, but host hb's own copy is still there",
		"m/hz: host hz has no such record of its own")
	s.until(t, time.Second, truth)

	// Removing ha's identity takes its records away at once, and ha can no
	// longer write anything.
	adm := ac.admin(t, "root", "rootpw")
	defer adm.Close()
	if err := adm.RemoveHost(ctx, "ha"); err != nil {
		t.Fatal(err)
	}
	s.until(t, 5*time.Second, "e/hb/e1@10.1.0.2 m/hb@192.0.2.2 m/hc@192.0.2.3")
	if _, err = evil.Put(ctx, k.netEndpoint(42, "ha", "x"), "{}"); err == nil {
		t.Error("a removed host still writes")
	}
}

// TestAddHostConverges: add-host run again changes nothing, puts back a
// role's permissions as they should be, keeps or sets the password as
// asked; remove-host of an unknown host succeeds.
func TestAddHostConverges(t *testing.T) {
	ac := newAuthCluster(t, "ha")
	adm := ac.admin(t, "root", "rootpw")
	defer adm.Close()
	ctx := context.Background()
	role := HostUser("ha")
	if _, err := adm.cli.RoleGrantPermission(ctx, role, "/test/hosts/", clientv3.GetPrefixRangeEnd("/test/hosts/"),
		clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		t.Fatal(err)
	}
	if set, err := adm.AddHost(ctx, "ha", "other", false); err != nil || set {
		t.Fatalf("add-host again: %t %v", set, err)
	}
	resp, err := adm.cli.RoleGet(ctx, role)
	if err != nil {
		t.Fatal(err)
	}
	grants := adm.k.hostGrants("ha")
	if len(resp.Perm) != len(grants) {
		t.Fatalf("role %s holds %d permissions, want %d: %v", role, len(resp.Perm), len(grants), resp.Perm)
	}
	for _, g := range grants {
		if !slices.ContainsFunc(resp.Perm, g.matches) {
			t.Errorf("role lacks %+v", g)
		}
	}
	h := ac.host(t, "ha", "192.0.2.1") // the password was kept
	waitSynced(t, h.c, 5*time.Second)
	if _, err := adm.AddHost(ctx, "ha", "new-pw", true); err != nil {
		t.Fatal(err)
	}
	ac.passwords["ha"] = "new-pw"
	if _, err := ac.raw(t, "ha").Get(ctx, "/test/hosts/ha"); err != nil {
		t.Fatalf("the new password: %v", err)
	}
	if err := adm.RemoveHost(ctx, "nosuch"); err != nil {
		t.Fatalf("remove an unknown host: %v", err)
	}
	if err := adm.EnableAuth(ctx, ""); err != nil {
		t.Fatalf("enable auth again: %v", err)
	}
}

// TestAuthenticatesWhenEtcdReturns: a host with an identity starts while
// etcd is down (it must), and publishes once etcd is back; a wrong password
// is said as such.
func TestAuthenticatesWhenEtcdReturns(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for an outage; skipped with -short")
	}
	ac := newAuthCluster(t, "ha")
	ac.srv.Stop()
	start := time.Now()
	h := ac.host(t, "ha", "192.0.2.1")
	if d := time.Since(start); d > time.Second {
		t.Fatalf("starting with etcd down took %s", d)
	}
	h.c.Rejoin(42)
	time.Sleep(time.Second)
	ac.srv.Restart()
	waitSynced(t, h.c, 15*time.Second)

	tlsCfg, err := ClientTLS([]string{ac.srv.Endpoint}, ac.tls, "ha")
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewAdmin(AdminConfig{Endpoints: []string{ac.srv.Endpoint}, TLS: tlsCfg, Username: HostUser("ha"), Password: "wrong"})
	if err == nil || !strings.Contains(err.Error(), "--etcd-password-file") {
		t.Fatalf("a wrong password: %v", err)
	}
}
