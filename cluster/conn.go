package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// The connection to etcd.
//
// With a user and password, clientv3.New authenticates before it returns,
// and fails when etcd does not answer within the dial timeout; but the
// plugin must start, and serve its local networks, while etcd is down. So a
// client without credentials is made at once (its calls fail, and the loops
// retry, as while etcd is down), and the authenticated one in the
// background, replacing it as soon as etcd takes the password. Watches of
// the first end when it is closed, and are made again on the second.

type conn struct {
	cur    atomic.Pointer[clientv3.Client]
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// etcd is the current etcd client.
func (c *Client) etcd() *clientv3.Client { return c.conn.cur.Load() }

// Close ends the connection. The host's lease is not revoked: a restarting
// plugin re-publishes under a new lease, and peers keep forwarding to this
// host meanwhile; a host that stays away is dropped when the TTL runs out.
func (c *Client) Close() error {
	c.conn.cancel()
	c.conn.wg.Wait()
	return c.etcd().Close()
}

// clientConfig is the etcd client configuration of cfg, without its
// credentials.
func clientConfig(cfg Config) clientv3.Config {
	return clientv3.Config{
		Endpoints:   cfg.Endpoints,
		TLS:         cfg.TLS,
		DialTimeout: DefaultDialTimeout,
		// Keep-alive pings notice a dead etcd connection within seconds.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		// Its own zap logging would repeat, in another format, what the
		// loops here log through slog.
		Logger: zap.NewNop(),
		// gRPC's default reconnect backoff grows to two minutes: after an
		// etcd outage of 30 s a host would stay disconnected for another
		// 20 s. Capped at 2 s, the cluster converges within seconds of
		// etcd's return.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
	}
}

// connect makes the client of cfg (see the note above).
func (c *Client) connect(cfg Config) error {
	if len(cfg.Endpoints) == 0 {
		return errors.New("cluster: no etcd endpoints")
	}
	base := clientConfig(cfg)
	cli, err := clientv3.New(base)
	if err != nil {
		return fmt.Errorf("etcd client for %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	c.conn.cur.Store(cli)
	ctx, cancel := context.WithCancel(context.Background())
	c.conn.cancel = cancel
	if cfg.Username != "" {
		withUser := base
		withUser.Username, withUser.Password = cfg.Username, cfg.Password
		c.conn.wg.Add(1)
		go func() { defer c.conn.wg.Done(); c.authenticate(ctx, withUser) }()
	}
	return nil
}

// authenticate makes the authenticated client, retrying until etcd takes
// the password, and puts it in place of the first.
func (c *Client) authenticate(ctx context.Context, cfg clientv3.Config) {
	var wait time.Duration
	var last string
	for {
		cli, err := clientv3.New(cfg)
		if err == nil {
			if ctx.Err() != nil {
				cli.Close()
				return
			}
			c.conn.cur.Swap(cli).Close()
			c.log.Info("etcd: authenticated", "user", cfg.Username)
			return
		}
		if msg := err.Error(); msg != last {
			last = msg
			c.log.Error("etcd: cannot authenticate; retrying", "user", cfg.Username, "err", authError(cfg.Username, err))
		}
		wait = min(max(2*wait, time.Second), 10*time.Second)
		if !sleep(ctx, wait) {
			return
		}
	}
}

// authError names what to fix when etcd refuses a user.
func authError(user string, err error) error {
	if errors.Is(err, rpctypes.ErrAuthFailed) {
		return fmt.Errorf("etcd refused user %q with this password (check --etcd-password-file, or give the host an identity again: vxbridge cluster add-host): %w", user, err)
	}
	return err
}

// TLSFiles are the PEM files of the etcd connection: the CA that verifies
// etcd ("system": the system's roots), and this host's client certificate
// and key.
type TLSFiles struct{ CA, Cert, Key string }

// SystemRoots is the TLSFiles.CA that asks for the system's roots.
const SystemRoots = "system"

// ClientTLS checks that the etcd connection is either plainly without TLS
// or fully with it, and returns its TLS configuration (nil: plain http).
// Half-way settings are refused, naming both halves: https:// without a CA
// (the system's roots must be asked for), http:// with TLS files (the
// etcd client would drop them silently) or with a user (its password
// would cross the network in clear), and endpoints of both schemes.
func ClientTLS(endpoints []string, files TLSFiles, username string) (*tls.Config, error) {
	scheme, err := endpointScheme(endpoints)
	if err != nil {
		return nil, err
	}
	if scheme == "http" {
		for _, f := range []struct{ flag, val string }{{"--etcd-ca", files.CA}, {"--etcd-cert", files.Cert}, {"--etcd-key", files.Key}, {"--etcd-username", username}} {
			if f.val != "" {
				return nil, fmt.Errorf("--etcd-endpoints %s is plain http, but %s is set: everything, passwords included, would cross the network in clear; use https:// endpoints, or leave out %s",
					strings.Join(endpoints, ","), f.flag, f.flag)
			}
		}
		return nil, nil
	}
	if files.CA == "" {
		return nil, fmt.Errorf("--etcd-endpoints %s is https, but --etcd-ca is not set: give the CA that signed etcd's certificate (--etcd-ca FILE), or trust the system's roots explicitly (--etcd-ca=%s)",
			strings.Join(endpoints, ","), SystemRoots)
	}
	return tlsConfig(files)
}

// endpointScheme is the one scheme of all endpoints, http or https.
func endpointScheme(endpoints []string) (string, error) {
	scheme := ""
	for _, e := range endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("--etcd-endpoints %q: want URLs, http://HOST:PORT or https://HOST:PORT", e)
		}
		if scheme != "" && u.Scheme != scheme {
			return "", fmt.Errorf("--etcd-endpoints %s mixes http and https: use https everywhere", strings.Join(endpoints, ","))
		}
		scheme = u.Scheme
	}
	if scheme == "" {
		return "", errors.New("--etcd-endpoints: none given")
	}
	return scheme, nil
}

// tlsConfig reads the PEM files: a CA (or the system's roots), and cert
// and key together.
func tlsConfig(files TLSFiles) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if files.CA != SystemRoots {
		pem, err := os.ReadFile(files.CA)
		if err != nil {
			return nil, fmt.Errorf("--etcd-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-ca %s: no PEM certificate in it", files.CA)
		}
	}
	if (files.Cert == "") != (files.Key == "") {
		return nil, errors.New("--etcd-cert and --etcd-key go together: give both or neither")
	}
	if files.Cert != "" {
		cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert/--etcd-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
