package main

// `vxbridge cluster add-host|remove-host`: the etcd identities of hosts.
//
// An operator runs it with etcd's root user (once auth is on) wherever
// etcd is reachable; add-host prints what to put on the host. Its etcd
// calls are what docs/trust.md describes; package cluster does them.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/vxbridge/vxbridge/cluster"
)

// adminTimeout bounds one cluster command: a few etcd calls, each hashing
// a password with bcrypt on etcd's side.
const adminTimeout = 30 * time.Second

type clusterCmd struct {
	etcd        etcdFlags
	hostID      string
	stateDir    string
	enableAuth  bool
	newPassword bool
}

func runCluster(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "add-host" && args[0] != "remove-host" {
		return errors.New("usage: vxbridge cluster add-host|remove-host [flags]")
	}
	verb := args[0]
	c := &clusterCmd{}
	fs := flag.NewFlagSet("vxbridge cluster "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.etcd.register(fs, "etcd client URLs, comma-separated (https://)", "root", "etcd user to act as (root, once authentication is on)")
	fs.StringVar(&c.hostID, "host-id", "", "the host's id, <state-dir>/host-id on that host (add-host: a new one when empty)")
	if verb == "add-host" {
		fs.StringVar(&c.stateDir, "state-dir", "/var/lib/vxbridge", "the host's --state-dir, for the paths printed")
		fs.BoolVar(&c.enableAuth, "enable-auth", false, "turn etcd's authentication on (making user root, with --etcd-password-file's password, if missing)")
		fs.BoolVar(&c.newPassword, "new-password", false, "give a host that has an identity a new password (its password file must then be replaced)")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.etcd.endpoints == "" {
		return errors.New("--etcd-endpoints is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	adm, err := c.admin()
	if err != nil {
		return err
	}
	defer adm.Close()
	if verb == "remove-host" {
		return c.removeHost(ctx, adm, stdout)
	}
	return c.addHost(ctx, adm, stdout)
}

func (c *clusterCmd) admin() (*cluster.Admin, error) {
	tlsCfg, password, err := c.etcd.connection()
	if err != nil {
		return nil, err
	}
	return cluster.NewAdmin(cluster.AdminConfig{Endpoints: c.etcd.endpointList(), TLS: tlsCfg,
		Username: c.etcd.username, Password: password, Prefix: c.etcd.prefix})
}

func (c *clusterCmd) removeHost(ctx context.Context, adm *cluster.Admin, stdout io.Writer) error {
	if c.hostID == "" {
		return errors.New("--host-id is required")
	}
	if err := adm.RemoveHost(ctx, c.hostID); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "host %s: etcd user and role %s removed, its lease revoked: its records are gone and it can write nothing more\n",
		c.hostID, cluster.HostUser(c.hostID))
	return nil
}

func (c *clusterCmd) addHost(ctx context.Context, adm *cluster.Admin, stdout io.Writer) error {
	setup := hostSetup{hostID: c.hostID, user: cluster.HostUser(c.hostID), newID: c.hostID == "", stateDir: c.stateDir, etcd: c.etcd}
	if setup.newID {
		id, err := cluster.NewHostID()
		if err != nil {
			return err
		}
		setup.hostID, setup.user = id, cluster.HostUser(id)
	}
	password, err := newPassword()
	if err != nil {
		return err
	}
	set, err := adm.AddHost(ctx, setup.hostID, password, c.newPassword)
	if err != nil {
		return err
	}
	if set {
		setup.password = password
	}
	if c.enableAuth {
		if c.etcd.username != "root" {
			return fmt.Errorf("--enable-auth needs --etcd-username root (etcd's own rule), not %q", c.etcd.username)
		}
		_, rootPassword, err := c.etcd.connection()
		if err != nil {
			return err
		}
		if err := adm.EnableAuth(ctx, rootPassword); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "etcd authentication is on: from now on every client needs a user (root: --etcd-password-file's password)")
	}
	setup.write(stdout)
	return nil
}

// newPassword is 24 random bytes, base64.
func newPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// hostSetup is what add-host prints: what to put on the host and how to
// start vxbridge there.
type hostSetup struct {
	hostID, user, password string // password "": unchanged, not shown
	newID                  bool
	stateDir               string
	etcd                   etcdFlags
}

func (h hostSetup) write(w io.Writer) {
	pwFile := filepath.Join(h.stateDir, "etcd-password")
	caFile := filepath.Join(h.stateDir, "etcd-ca.pem")
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("host %s: etcd user %s (role %s)", h.hostID, h.user, h.user)
	p("")
	p("On that host, as root, before vxbridge starts:")
	p("  install -d -m 0700 %s", h.stateDir)
	if h.newID {
		p("  echo %s > %s", h.hostID, filepath.Join(h.stateDir, cluster.HostIDFile))
	}
	if h.password != "" {
		p("  (umask 077; printf '%%s\\n' '%s' > %s)", h.password, pwFile)
	} else {
		p("  # the password is unchanged (not shown): keep %s as it is (--new-password sets a new one)", pwFile)
	}
	ca := h.etcd.ca
	if ca != "" && ca != cluster.SystemRoots {
		p("  # copy %s (the CA of etcd's certificate) to %s", ca, caFile)
	} else {
		caFile = cluster.SystemRoots
	}
	p("")
	p("and start it with:")
	p("  vxbridge serve --etcd-endpoints %s --etcd-ca %s \\", h.etcd.endpoints, caFile)
	p("      --etcd-username %s --etcd-password-file %s", h.user, pwFile)
	p("or, for the managed plugin (disabled), with the state mount at %s:", h.stateDir)
	p("  docker plugin set vxbridge:TAG VXBRIDGE_ETCD_ENDPOINTS=%s VXBRIDGE_ETCD_CA=%s \\", h.etcd.endpoints, caFile)
	p("      VXBRIDGE_ETCD_USERNAME=%s VXBRIDGE_ETCD_PASSWORD_FILE=%s", h.user, pwFile)
}
