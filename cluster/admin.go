package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Per-host etcd identities.
//
// Each host gets an etcd user and a role of its own, both named
// HostUser(id). The role lets the host read everything under the prefix
// and write only:
//
//	hosts/<id>              its host record (one key)
//	endpoints/<id>/         its endpoint records
//	memberships/<id>/       its memberships
//	net/                    every network's records: any host may join any
//	                        network, so readers check these against the two
//	                        ranges above (verify.go)
//	hostblocks/<id>/        its claims of address blocks (blocks.go)
//	blocks/ networks/ subnets/   the cluster-wide claims (compare-and-swap);
//	                        a block is held by the claim in hostblocks/
//
// So no host can publish, change or delete what another host says of
// itself: its own ranges are its alone, and what it writes in a network's
// prefix for another host is not believed. An operator (etcd's root) runs
// this through vxbridge cluster add-host and remove-host.

// HostUser is the etcd user, and role, of host id.
func HostUser(id string) string { return "vxbridge-host-" + id }

// Grant is one permission of a host's role.
type Grant struct {
	Key, RangeEnd string // RangeEnd "": the key alone
	Write         bool   // read and write; else read only
}

// hostGrants are the permissions of host id's role.
func (k keys) hostGrants(id string) []Grant {
	prefix := func(p string) Grant { return Grant{Key: p, RangeEnd: clientv3.GetPrefixRangeEnd(p), Write: true} }
	read := prefix(k.prefix + "/")
	read.Write = false
	return []Grant{read,
		{Key: k.host(id), Write: true},
		prefix(k.hostEndpoints(id)),
		prefix(k.memberships(id)),
		prefix(k.hostBlocks(id)),
		prefix(k.prefix + "/net/"),
		prefix(k.prefix + "/blocks/"),
		prefix(k.prefix + "/networks/"),
		prefix(k.prefix + "/subnets/"),
	}
}

// ValidHostID says whether id can name a host in keys and etcd users.
func ValidHostID(id string) error {
	if id == "" || len(id) > 64 || strings.ContainsAny(id, "/ \t\n") {
		return fmt.Errorf("host id %q: want 1 to 64 characters, no slash or space", id)
	}
	return nil
}

// AdminConfig is how an operator reaches etcd: as root once auth is on.
type AdminConfig struct {
	Endpoints          []string
	TLS                *tls.Config
	Username, Password string
	Prefix             string
}

// Admin manages the hosts' etcd identities.
type Admin struct {
	cli *clientv3.Client
	k   keys
}

// NewAdmin connects to etcd.
func NewAdmin(cfg AdminConfig) (*Admin, error) {
	c := clientConfig(Config{Endpoints: cfg.Endpoints, TLS: cfg.TLS})
	c.Username, c.Password = cfg.Username, cfg.Password
	cli, err := clientv3.New(c)
	if err != nil {
		return nil, fmt.Errorf("etcd at %s: %w", strings.Join(cfg.Endpoints, ","), authError(cfg.Username, err))
	}
	return &Admin{cli: cli, k: newKeys(cfg.Prefix)}, nil
}

// Close ends the connection.
func (a *Admin) Close() error { return a.cli.Close() }

// AddHost gives host id its role (exactly hostGrants) and its user. A new
// user gets password, and so does one that exists when replace is set;
// set says whether the user has password now.
func (a *Admin) AddHost(ctx context.Context, id, password string, replace bool) (set bool, err error) {
	if err := ValidHostID(id); err != nil {
		return false, err
	}
	if password == "" {
		return false, errors.New("add host: empty password")
	}
	name := HostUser(id)
	if err := a.ensureRole(ctx, name, a.k.hostGrants(id)); err != nil {
		return false, err
	}
	_, err = a.cli.UserGet(ctx, name)
	switch {
	case errors.Is(err, rpctypes.ErrUserNotFound):
		if _, err := a.cli.UserAdd(ctx, name, password); err != nil {
			return false, fmt.Errorf("add etcd user %s: %w", name, err)
		}
		set = true
	case err != nil:
		return false, fmt.Errorf("read etcd user %s: %w", name, err)
	case replace:
		if _, err := a.cli.UserChangePassword(ctx, name, password); err != nil {
			return false, fmt.Errorf("set the password of etcd user %s: %w", name, err)
		}
		set = true
	}
	if _, err := a.cli.UserGrantRole(ctx, name, name); err != nil {
		return false, fmt.Errorf("grant role %s to etcd user %s: %w", name, name, err)
	}
	return set, nil
}

// ensureRole makes role hold exactly grants.
func (a *Admin) ensureRole(ctx context.Context, role string, grants []Grant) error {
	resp, err := a.cli.RoleGet(ctx, role)
	if errors.Is(err, rpctypes.ErrRoleNotFound) {
		if _, err := a.cli.RoleAdd(ctx, role); err != nil {
			return fmt.Errorf("add etcd role %s: %w", role, err)
		}
		resp, err = &clientv3.AuthRoleGetResponse{}, nil
	}
	if err != nil {
		return fmt.Errorf("read etcd role %s: %w", role, err)
	}
	for _, p := range resp.Perm {
		if !slices.ContainsFunc(grants, func(g Grant) bool { return g.matches(p) }) {
			if _, err := a.cli.RoleRevokePermission(ctx, role, string(p.Key), string(p.RangeEnd)); err != nil {
				return fmt.Errorf("revoke %s from etcd role %s: %w", p.Key, role, err)
			}
		}
	}
	for _, g := range grants {
		if slices.ContainsFunc(resp.Perm, g.matches) {
			continue
		}
		perm := clientv3.PermissionType(clientv3.PermRead)
		if g.Write {
			perm = clientv3.PermissionType(clientv3.PermReadWrite)
		}
		if _, err := a.cli.RoleGrantPermission(ctx, role, g.Key, g.RangeEnd, perm); err != nil {
			return fmt.Errorf("grant %s to etcd role %s: %w", g.Key, role, err)
		}
	}
	return nil
}

func (g Grant) matches(p *authpb.Permission) bool {
	want := authpb.READ
	if g.Write {
		want = authpb.READWRITE
	}
	return string(p.Key) == g.Key && string(p.RangeEnd) == g.RangeEnd && p.PermType == want
}

// EnableAuth turns etcd's authentication on. etcd needs a user root with
// the role root first: it is made with rootPassword when missing.
func (a *Admin) EnableAuth(ctx context.Context, rootPassword string) error {
	_, err := a.cli.UserGet(ctx, "root")
	if errors.Is(err, rpctypes.ErrUserNotFound) {
		if rootPassword == "" {
			return errors.New("etcd has no user root yet: give its password (--etcd-password-file) to make it")
		}
		if _, err := a.cli.UserAdd(ctx, "root", rootPassword); err != nil {
			return fmt.Errorf("add etcd user root: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("read etcd user root: %w", err)
	}
	if _, err := a.cli.UserGrantRole(ctx, "root", "root"); err != nil {
		return fmt.Errorf("grant role root to etcd user root: %w", err)
	}
	if _, err := a.cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("turn etcd authentication on: %w", err)
	}
	return nil
}

// RemoveHost deletes host id's user and role and revokes its lease, so
// its records go at once; what is already gone is success.
func (a *Admin) RemoveHost(ctx context.Context, id string) error {
	if err := ValidHostID(id); err != nil {
		return err
	}
	name := HostUser(id)
	if _, err := a.cli.UserDelete(ctx, name); err != nil && !errors.Is(err, rpctypes.ErrUserNotFound) {
		return fmt.Errorf("delete etcd user %s: %w", name, err)
	}
	if _, err := a.cli.RoleDelete(ctx, name); err != nil && !errors.Is(err, rpctypes.ErrRoleNotFound) {
		return fmt.Errorf("delete etcd role %s: %w", name, err)
	}
	// Block claims are on the host's lease, unless a compromised host
	// wrote some without one: those would hold their blocks for ever.
	if _, err := a.cli.Delete(ctx, a.k.hostBlocks(id), clientv3.WithPrefix()); err != nil {
		return fmt.Errorf("delete the address block claims of host %s: %w", id, err)
	}
	resp, err := a.cli.Get(ctx, a.k.host(id))
	if err != nil {
		return fmt.Errorf("read the host record of %s: %w", id, err)
	}
	for _, kv := range resp.Kvs {
		if kv.Lease == 0 {
			continue
		}
		_, err := a.cli.Revoke(ctx, clientv3.LeaseID(kv.Lease))
		if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return fmt.Errorf("revoke the lease of host %s: %w", id, err)
		}
	}
	return nil
}
