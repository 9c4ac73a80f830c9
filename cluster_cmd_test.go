package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/internal/testutil/clustertest"
	"github.com/vxbridge/vxbridge/internal/testutil/etcdtest"
)

var printedPassword = regexp.MustCompile(`printf '%s\\n' '([^']+)' > `)

// TestClusterAddHost: add-host makes a host's identity and turns auth on,
// printing what the host needs; that host then publishes with it; a
// second add-host needs root's password; remove-host takes it away.
func TestClusterAddHost(t *testing.T) {
	srv := etcdtest.StartTLS(t)
	dir := t.TempDir()
	rootPW := filepath.Join(dir, "root.pw")
	if err := os.WriteFile(rootPW, []byte("r00t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conn := []string{"--etcd-endpoints", srv.Endpoint, "--etcd-ca", srv.Certs.CA, "--etcd-prefix", "/t"}
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := runCluster(append(args, conn...), &out, io.Discard)
		return out.String(), err
	}
	out, err := run("add-host", "--host-id", "h1", "--enable-auth", "--etcd-password-file", rootPW, "--state-dir", "/srv/vx")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"etcd authentication is on", "--etcd-username vxbridge-host-h1 --etcd-password-file /srv/vx/etcd-password",
		"VXBRIDGE_ETCD_USERNAME=vxbridge-host-h1", "copy " + srv.Certs.CA} {
		if !strings.Contains(out, want) {
			t.Errorf("add-host output lacks %q:\n%s", want, out)
		}
	}
	m := printedPassword.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no password printed:\n%s", out)
	}
	h1 := startAuthHost(t, srv, "h1", m[1])
	waitPublished(t, h1)

	if _, err := run("add-host", "--host-id", "h2"); err == nil {
		t.Fatal("add-host without root's password worked with auth on")
	}
	out, err = run("add-host", "--etcd-password-file", rootPW) // a new host: a new id
	if err != nil || !strings.Contains(out, "> /var/lib/vxbridge/host-id") {
		t.Fatalf("add-host of a new host: %v\n%s", err, out)
	}
	out, err = run("add-host", "--host-id", "h1", "--etcd-password-file", rootPW) // again: the password stays
	if err != nil || printedPassword.MatchString(out) || !strings.Contains(out, "password is unchanged") {
		t.Fatalf("add-host again: %v\n%s", err, out)
	}
	if _, err := run("remove-host", "--host-id", "h1", "--etcd-password-file", rootPW); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.NewAdmin(cluster.AdminConfig{Endpoints: []string{srv.Endpoint}, TLS: etcdTLS(t, srv),
		Username: cluster.HostUser("h1"), Password: m[1]}); err == nil {
		t.Fatal("a removed host's identity still authenticates")
	}
}

func etcdTLS(t *testing.T, srv *etcdtest.Server) *tls.Config {
	t.Helper()
	c, err := cluster.ClientTLS([]string{srv.Endpoint}, cluster.TLSFiles{CA: srv.Certs.CA}, "u")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func startAuthHost(t *testing.T, srv *etcdtest.Server, id, password string) *cluster.Client {
	t.Helper()
	return clustertest.Run(t, cluster.Config{Endpoints: []string{srv.Endpoint}, TLS: etcdTLS(t, srv), Prefix: "/t", HostID: id,
		Username: cluster.HostUser(id), Password: password, TTL: 5 * time.Second}, "192.0.2.1")
}

func waitPublished(t *testing.T, c *cluster.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitSynced(ctx); err != nil {
		ok, msg := c.Connected()
		t.Fatalf("host %s did not publish: %v (%t %s)", c.HostID(), err, ok, msg)
	}
}
