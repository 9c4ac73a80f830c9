// Package bench is the harness behind `make bench`: it runs the real
// bin/vxbridge in throwaway network namespaces (and, for figure 1, a real
// dockerd from internal/testutil/testbed), measures, and writes
// bench/results/results.json; bench/plot turns that into BENCHMARKS.md and
// PNG plots. The measurements run only from TestBench with
// VXBRIDGE_BENCH_OUT set: `go test ./...` compiles this package and skips.
package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// client speaks to the plugin as dockerd does: POST JSON on the unix socket,
// over one kept-alive connection per client (dockerd's plugin client keeps
// connections alive too).
type client struct {
	hc *http.Client
}

func newClient(socket string) *client { return newClientTimeout(socket, 30*time.Second) }

// newClientTimeout is newClient with its own bound on each call.
func newClientTimeout(socket string, timeout time.Duration) *client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 1,
	}
	return &client{hc: &http.Client{Transport: tr, Timeout: timeout}}
}

func (c *client) close() { c.hc.CloseIdleConnections() }

// call POSTs req to path and decodes the answer into resp (may be nil).
func (c *client) call(path string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	r, err := http.NewRequest(http.MethodPost, "http://plugin/"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	r.Header.Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	res, err := c.hc.Do(r)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("%s: read answer: %w", path, err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", path, res.StatusCode, b)
	}
	if resp == nil {
		return nil
	}
	if err := json.Unmarshal(b, resp); err != nil {
		return fmt.Errorf("%s: decode %q: %w", path, b, err)
	}
	return nil
}

// network is a vxbridge network created over the API, with its IPAM pool.
type network struct {
	ID     string
	PoolID string
}

// createNetwork does what `docker network create -d vxbridge --ipam-driver
// vxbridge --subnet SUBNET` sends: RequestPool, the gateway's
// RequestAddress, CreateNetwork.
func createNetwork(c *client, subnet string) (network, error) {
	return createNetworkWith(c, subnet, map[string]string{})
}

// createNetworkWith is createNetwork with driver options (docker's -o).
func createNetworkWith(c *client, subnet string, opts map[string]string) (network, error) {
	var pool struct{ PoolID, Pool string }
	err := c.call("IpamDriver.RequestPool", map[string]any{
		"AddressSpace": "vxbridge-local", "Pool": subnet, "Options": map[string]string{}, "V6": false}, &pool)
	if err != nil {
		return network{}, err
	}
	var gw struct{ Address string }
	err = c.call("IpamDriver.RequestAddress", map[string]any{"PoolID": pool.PoolID,
		"Options": map[string]string{"RequestAddressType": "com.docker.network.gateway"}}, &gw)
	if err != nil {
		return network{}, err
	}
	n := network{ID: randomID(), PoolID: pool.PoolID}
	err = c.call("NetworkDriver.CreateNetwork", map[string]any{
		"NetworkID": n.ID,
		"Options": map[string]any{"com.docker.network.generic": opts,
			"com.docker.network.enable_ipv6": false},
		"IPv4Data": []map[string]any{{"AddressSpace": "vxbridge-local", "Pool": pool.Pool, "Gateway": gw.Address}},
		"IPv6Data": []any{},
	}, nil)
	return n, err
}

// endpoint is one created and joined endpoint.
type endpoint struct {
	ID      string
	Address string // CIDR, as IPAM answered
	SrcName string // the container end, as Join named it
}

// timer records the duration of each plugin call by name; nil records nothing.
type timer func(call string, d time.Duration)

func (tm timer) call(c *client, path string, req, resp any) error {
	start := time.Now()
	err := c.call(path, req, resp)
	if tm != nil && err == nil {
		tm(path, time.Since(start))
	}
	return err
}

// up is a container start's share: RequestAddress, CreateEndpoint, Join.
func up(c *client, n network, tm timer) (endpoint, error) {
	var addr struct{ Address string }
	if err := tm.call(c, "IpamDriver.RequestAddress", map[string]any{"PoolID": n.PoolID,
		"Options": map[string]string{}}, &addr); err != nil {
		return endpoint{}, err
	}
	ep := endpoint{ID: randomID(), Address: addr.Address}
	if err := tm.call(c, "NetworkDriver.CreateEndpoint", map[string]any{"NetworkID": n.ID, "EndpointID": ep.ID,
		"Interface": map[string]string{"Address": ep.Address}, "Options": map[string]any{}}, nil); err != nil {
		return ep, err
	}
	var join struct{ InterfaceName struct{ SrcName string } }
	err := tm.call(c, "NetworkDriver.Join", map[string]any{"NetworkID": n.ID, "EndpointID": ep.ID,
		"SandboxKey": "/var/run/docker/netns/" + ep.ID[:12], "Options": map[string]any{}}, &join)
	ep.SrcName = join.InterfaceName.SrcName
	return ep, err
}

// down is a container stop's share: Leave, DeleteEndpoint, ReleaseAddress.
func down(c *client, n network, ep endpoint, tm timer) error {
	ids := map[string]string{"NetworkID": n.ID, "EndpointID": ep.ID}
	if err := tm.call(c, "NetworkDriver.Leave", ids, nil); err != nil {
		return err
	}
	if err := tm.call(c, "NetworkDriver.DeleteEndpoint", ids, nil); err != nil {
		return err
	}
	ip, _, err := net.ParseCIDR(ep.Address)
	if err != nil {
		return fmt.Errorf("IPAM answered %q: %w", ep.Address, err)
	}
	return tm.call(c, "IpamDriver.ReleaseAddress", map[string]string{"PoolID": n.PoolID, "Address": ip.String()}, nil)
}

// lifecycle is one container's whole life as the plugin sees it.
func lifecycle(c *client, n network, tm timer) error {
	ep, err := up(c, n, tm)
	if err != nil {
		return err
	}
	return down(c, n, ep, tm)
}

// randomID is a docker-style 64-hex id; random, because the plugin derives
// interface names from its first characters.
func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
