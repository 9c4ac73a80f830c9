// Package clustertest runs cluster clients (one per host) against a real
// etcd for tests of the packages built on package cluster.
package clustertest

import (
	"context"
	"net/netip"
	"testing"

	"github.com/vxbridge/vxbridge/cluster"
)

// Run starts a Client of cfg with VTEP vtep and its publishing loop; both
// stop when the test ends (the lease is not revoked, as a killed plugin's).
func Run(t testing.TB, cfg cluster.Config, vtep string) *cluster.Client {
	t.Helper()
	c, err := cluster.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	c.SetHost(cluster.Host{VTEP: netip.MustParseAddr(vtep), Port: 4789})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; c.Close() })
	return c
}
