package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vxbridge/vxbridge/cluster"
)

// etcdFlags reach etcd: serve's and the cluster command's.
type etcdFlags struct {
	endpoints     string
	ca, cert, key string
	username      string
	passwordFile  string
	prefix        string
}

func (f *etcdFlags) register(fs *flag.FlagSet, endpointsUsage, defaultUser, userUsage string) {
	fs.StringVar(&f.endpoints, "etcd-endpoints", "", endpointsUsage)
	fs.StringVar(&f.ca, "etcd-ca", "", `PEM CA bundle verifying etcd's certificate (required with https:// endpoints; "system": the system's roots)`)
	fs.StringVar(&f.cert, "etcd-cert", "", "PEM client certificate for etcd (with --etcd-key)")
	fs.StringVar(&f.key, "etcd-key", "", "PEM client key for etcd (with --etcd-cert)")
	fs.StringVar(&f.username, "etcd-username", defaultUser, userUsage)
	fs.StringVar(&f.passwordFile, "etcd-password-file", "", "file holding the password of --etcd-username (mode 0600 or stricter)")
	fs.StringVar(&f.prefix, "etcd-prefix", cluster.DefaultPrefix, "etcd key prefix of vxbridge's cluster state")
}

func (f *etcdFlags) endpointList() []string { return strings.Split(f.endpoints, ",") }
func (f *etcdFlags) tlsFiles() cluster.TLSFiles {
	return cluster.TLSFiles{CA: f.ca, Cert: f.cert, Key: f.key}
}

// validate checks the flags without reading the password.
func (f *etcdFlags) validate() error {
	if (f.username == "") != (f.passwordFile == "") {
		return errors.New("--etcd-username and --etcd-password-file go together: give both or neither")
	}
	_, err := cluster.ClientTLS(f.endpointList(), f.tlsFiles(), f.username)
	return err
}

// connection is the TLS configuration and the password.
func (f *etcdFlags) connection() (*tls.Config, string, error) {
	if err := f.validate(); err != nil {
		return nil, "", err
	}
	tlsCfg, err := cluster.ClientTLS(f.endpointList(), f.tlsFiles(), f.username)
	if err != nil {
		return nil, "", err
	}
	password, err := readPassword(f.passwordFile)
	return tlsCfg, password, err
}

// readPassword reads a password file: its first line, which must not be
// empty, from a file no one but its owner can read.
func readPassword(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("--etcd-password-file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("--etcd-password-file %s: mode %04o lets others read it: chmod 0600 %s", path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--etcd-password-file: %w", err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	if pw = strings.TrimRight(pw, "\r"); pw == "" {
		return "", fmt.Errorf("--etcd-password-file %s is empty", path)
	}
	return pw, nil
}

// checkHostUser refuses an etcd user made by vxbridge cluster add-host for
// another host id than this host's: etcd would refuse all of its writes.
func checkHostUser(user, hostID, stateDir string) error {
	other, ok := strings.CutPrefix(user, cluster.HostUser(""))
	if !ok || other == hostID {
		return nil
	}
	return fmt.Errorf("--etcd-username %s is the etcd identity of host %s, but this host's id is %s (%s): etcd lets it write host %s's records only. "+
		"Put %s in %s if this is that host, or give this host its own identity: vxbridge cluster add-host --host-id %s",
		user, other, hostID, filepath.Join(stateDir, cluster.HostIDFile), other, other, filepath.Join(stateDir, cluster.HostIDFile), hostID)
}
