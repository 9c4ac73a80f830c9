// Package etcdtest runs a real etcd (Debian's etcd-server, /usr/bin/etcd)
// for tests: on 127.0.0.1 with free ports and a temporary data directory,
// stopped by its pid when the test ends; plain, or with TLS from
// certificates made for the test (WriteCerts).
package etcdtest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Binary is where the etcd server is looked for first.
const Binary = "/usr/bin/etcd"

// Server is one etcd member.
type Server struct {
	// Endpoint is the client URL, http://127.0.0.1:PORT (https:// with
	// TLS).
	Endpoint string
	// Certs are the TLS files (nil: plain http).
	Certs *Certs

	t              testing.TB
	bin, dir, peer string
	cmd            *exec.Cmd
	done           chan struct{}
}

// Start starts etcd, or skips the test saying why when there is no etcd.
func Start(t testing.TB) *Server { t.Helper(); return start(t, false) }

// StartTLS starts etcd serving clients over TLS with certificates made for
// the test; clients need not present one of their own.
func StartTLS(t testing.TB) *Server { t.Helper(); return start(t, true) }

func start(t testing.TB, withTLS bool) *Server {
	t.Helper()
	bin := Binary
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("etcd"); err != nil {
			t.Skip("etcd server not installed (apt-get install etcd-server): skipping the etcd-backed tests")
		}
	}
	s := &Server{
		t:        t,
		bin:      bin,
		dir:      t.TempDir(),
		Endpoint: "http://" + freeAddr(t),
		peer:     "http://" + freeAddr(t),
	}
	if withTLS {
		s.Certs = WriteCerts(t, t.TempDir())
		s.Endpoint = "https" + strings.TrimPrefix(s.Endpoint, "http")
	}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (s *Server) start() {
	s.t.Helper()
	log, err := os.Create(filepath.Join(s.dir, "etcd.log"))
	if err != nil {
		s.t.Fatal(err)
	}
	defer log.Close()
	args := []string{"--name", "test", "--data-dir", filepath.Join(s.dir, "data"),
		"--listen-client-urls", s.Endpoint, "--advertise-client-urls", s.Endpoint,
		"--listen-peer-urls", s.peer, "--initial-advertise-peer-urls", s.peer,
		"--initial-cluster", "test=" + s.peer, "--log-level", "warn"}
	if s.Certs != nil {
		// No --trusted-ca-file: with it, etcd 3.4 asks every client for a
		// certificate of its own.
		args = append(args, "--cert-file", s.Certs.ServerCert, "--key-file", s.Certs.ServerKey)
	}
	s.cmd = exec.Command(s.bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start etcd: %v", err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.cmd, s.done)
	hc := s.httpClient()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := hc.Get(s.Endpoint + "/health")
		if err == nil {
			ok := resp.StatusCode == http.StatusOK
			resp.Body.Close()
			if ok {
				return
			}
		}
		select {
		case <-s.done:
			s.t.Fatalf("etcd exited at start:\n%s", s.Log())
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.Stop()
	s.t.Fatalf("etcd not healthy after 15s:\n%s", s.Log())
}

// httpClient reaches the server's health endpoint, trusting its CA.
func (s *Server) httpClient() *http.Client {
	if s.Certs == nil {
		return &http.Client{Timeout: time.Second}
	}
	pool := x509.NewCertPool()
	if pem, err := os.ReadFile(s.Certs.CA); err == nil {
		pool.AppendCertsFromPEM(pem)
	}
	return &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// Stop stops etcd (SIGTERM, then SIGKILL after 5 s); stopping twice is fine.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Restart starts a stopped server again on the same ports and data.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Log returns what etcd wrote so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "etcd.log"))
	return strings.TrimSpace(string(b))
}

// String names the server in test output.
func (s *Server) String() string { return fmt.Sprintf("etcd at %s", s.Endpoint) }
