package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Certs are PEM files made for a test: a CA, a server certificate it
// signed (for the addresses given), and a client certificate.
type Certs struct {
	Dir                   string
	CA                    string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
	OtherCA               string // a CA that signed nothing here: a client trusting it must fail
	caCert                *x509.Certificate
	caKey                 *ecdsa.PrivateKey
	serial                int64
}

// WriteCerts makes the certificates in dir; the server certificate is
// valid for ips (and 127.0.0.1, localhost).
func WriteCerts(t testing.TB, dir string, ips ...string) *Certs {
	t.Helper()
	c := &Certs{Dir: dir, serial: 1}
	c.caCert, c.caKey = c.selfSigned(t, "vxbridge test CA", "ca")
	c.CA = filepath.Join(dir, "ca.pem")
	c.OtherCA = filepath.Join(dir, "other-ca.pem")
	c.selfSigned(t, "another CA", "other-ca")
	addrs := []net.IP{net.ParseIP("127.0.0.1")}
	for _, ip := range ips {
		addrs = append(addrs, net.ParseIP(ip))
	}
	c.ServerCert, c.ServerKey = c.issue(t, "server", &x509.Certificate{Subject: pkix.Name{CommonName: "etcd"},
		IPAddresses: addrs, DNSNames: []string{"localhost"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	c.ClientCert, c.ClientKey = c.issue(t, "client", &x509.Certificate{Subject: pkix.Name{CommonName: "client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return c
}

// selfSigned writes a CA certificate and key as <name>.pem, <name>-key.pem.
func (c *Certs) selfSigned(t testing.TB, cn, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(c.next()), Subject: pkix.Name{CommonName: cn}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c.write(t, name, der, key)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// issue writes a certificate the CA signs, and its key.
func (c *Certs) issue(t testing.TB, name string, tmpl *x509.Certificate) (certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = big.NewInt(c.next())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.caCert, &key.PublicKey, c.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return c.write(t, name, der, key)
}

func (c *Certs) next() int64 { c.serial++; return c.serial }

func (c *Certs) write(t testing.TB, name string, der []byte, key *ecdsa.PrivateKey) (certFile, keyFile string) {
	t.Helper()
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(c.Dir, name+".pem"), filepath.Join(c.Dir, name+"-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}
