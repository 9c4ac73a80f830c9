package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	ipamapi "github.com/docker/go-plugins-helpers/ipam"

	"github.com/vxbridge/vxbridge/bench/sim"
	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/ipam"
)

// simHost is one synthetic vxbridge host: a real cluster.Client (its own
// etcd connection, lease, host record, memberships, endpoints, kept by the
// client's Run loop) and a real IPAM with the block allocators vxbridge
// wires to it, so everything it writes to etcd is what a vxbridge host with
// the same containers writes, through the same calls (serve_crosshost.go,
// driver/crosshost.go). Only the kernel side is missing.
type simHost struct {
	id     string
	c      *cluster.Client
	ip     *ipam.Driver
	blocks *ipam.BlockAllocators
	stamps *stamper
	nets   map[uint32]*hostNet

	mu   sync.Mutex
	live []*endpoint // oldest first
}

type hostNet struct {
	vni    uint32
	subnet netip.Prefix
	poolID string
}

type endpoint struct {
	id, mac string
	addr    netip.Addr
	net     *hostNet
}

// hostConfig is what every synthetic host shares.
type hostConfig struct {
	etcd   []string
	prefix string
	ttl    time.Duration
	port   int
	log    *slog.Logger
	rec    *recorder
}

// newHost connects host id (VTEP vtep) and starts its client's loops; they
// end with ctx.
func newHost(ctx context.Context, id string, vtep netip.Addr, cfg hostConfig) (*simHost, error) {
	c, err := cluster.New(cluster.Config{Endpoints: cfg.etcd, Prefix: cfg.prefix, HostID: id, TTL: cfg.ttl, Logger: cfg.log})
	if err != nil {
		return nil, err
	}
	c.SetHost(cluster.Host{VTEP: vtep, Port: cfg.port})
	st := newMemStore()
	blocks := ipam.NewBlockAllocators(ipam.BlockConfig{Store: st, Leaser: c, Logger: cfg.log})
	ip, err := ipam.New(st, ipam.Options{NewAllocator: blocks.Factory, Logger: cfg.log})
	if err != nil {
		c.Close()
		return nil, err
	}
	h := &simHost{id: id, c: c, ip: ip, blocks: blocks, stamps: newStamper(c, cfg.rec), nets: map[uint32]*hostNet{}}
	go c.Run(ctx)
	go h.stamps.run(ctx)
	return h, nil
}

// join does what `docker network create -d vxbridge --ipam-driver vxbridge
// --subnet S -o vxlan.id=V` does on a host: the pool, the gateway, the
// cluster's check and membership, an address block ahead.
func (h *simHost) join(ctx context.Context, n sim.Net) error {
	pool, err := h.ip.RequestPool(&ipamapi.RequestPoolRequest{AddressSpace: ipam.DefaultLocalAddressSpace,
		Pool: n.Subnet.String(), Options: map[string]string{}})
	if err != nil {
		return fmt.Errorf("pool %s: %w", n.Subnet, err)
	}
	if _, err := h.ip.RequestAddress(&ipamapi.RequestAddressRequest{PoolID: pool.PoolID,
		Options: map[string]string{"RequestAddressType": "com.docker.network.gateway"}}); err != nil {
		return fmt.Errorf("gateway of %s: %w", n.Subnet, err)
	}
	claim := func() error {
		return h.c.ClaimNetwork(ctx, cluster.Network{VNI: n.VNI, Subnets: []netip.Prefix{n.Subnet}})
	}
	if err := retry(ctx, claim, cluster.ErrConflict); err != nil {
		return fmt.Errorf("claim vxlan.id %d: %w", n.VNI, err)
	}
	prefetch := func() error { return h.blocks.Prefetch(ctx, n.Subnet) }
	if err := retry(ctx, prefetch, ipam.ErrPoolExhausted); err != nil {
		return fmt.Errorf("address block of %s: %w", n.Subnet, err)
	}
	h.nets[n.VNI] = &hostNet{vni: n.VNI, subnet: n.Subnet, poolID: pool.PoolID}
	return nil
}

// retry calls fn until it succeeds, fails with final, or ctx ends: many
// hosts claiming one network or address block at once keep changing the
// records each compares against, and a host has no lease at first. A
// vxbridge host would be asked again by docker; a synthetic one asks again
// itself.
func retry(ctx context.Context, fn func() error, final error) error {
	backoff := 20 * time.Millisecond
	for {
		err := fn()
		if err == nil || errors.Is(err, final) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(jitter(backoff)):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// start is a container start's share: an address, then the endpoint
// published (CreateEndpoint). It returns the endpoint's MAC.
func (h *simHost) start(vni uint32, tag string) (string, error) {
	n := h.nets[vni]
	if n == nil {
		return "", fmt.Errorf("host %s is not in vxlan.id %d", h.id, vni)
	}
	resp, err := h.ip.RequestAddress(&ipamapi.RequestAddressRequest{PoolID: n.poolID, Options: map[string]string{}})
	if err != nil {
		return "", fmt.Errorf("host %s: address in %s: %w", h.id, n.subnet, err)
	}
	pfx, err := netip.ParsePrefix(resp.Address)
	if err != nil {
		return "", fmt.Errorf("host %s: IPAM answered %q: %w", h.id, resp.Address, err)
	}
	ep := &endpoint{id: randomHex(32), mac: randomMAC(), addr: pfx.Addr(), net: n}
	pub := time.Now()
	h.c.Publish(cluster.Endpoint{ID: ep.id, VNI: vni, MAC: ep.mac, IPv4: ep.addr})
	h.stamps.add(h.record(sim.OpAdd, tag, ep, pub))
	h.mu.Lock()
	h.live = append(h.live, ep)
	h.mu.Unlock()
	return ep.mac, nil
}

// stop is a container stop's share: the endpoint withdrawn
// (DeleteEndpoint), then its address released.
func (h *simHost) stop(ep *endpoint, tag string) error {
	pub := time.Now()
	h.c.Withdraw(ep.id)
	h.stamps.add(h.record(sim.OpDel, tag, ep, pub))
	if err := h.ip.ReleaseAddress(&ipamapi.ReleaseAddressRequest{PoolID: ep.net.poolID, Address: ep.addr.String()}); err != nil {
		return fmt.Errorf("host %s: release %s: %w", h.id, ep.addr, err)
	}
	return nil
}

func (h *simHost) record(op, tag string, ep *endpoint, pub time.Time) sim.Record {
	return sim.Record{Op: op, Tag: tag, Host: h.id, VNI: ep.net.vni, MAC: ep.mac, IP: ep.addr.String(), Published: pub.UnixNano()}
}

// replace stops one of the host's endpoints in vnis (all when nil), chosen
// by pick among the candidates oldest first, and starts a new one in the
// same network: one start and one stop of the churn.
func (h *simHost) replace(vnis map[uint32]bool, pick func(n int) int, tag string) error {
	h.mu.Lock()
	var cands []int
	for i, ep := range h.live {
		if vnis == nil || vnis[ep.net.vni] {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		h.mu.Unlock()
		return fmt.Errorf("host %s has no endpoint to stop", h.id)
	}
	i := cands[pick(len(cands))]
	ep := h.live[i]
	h.live = append(h.live[:i:i], h.live[i+1:]...)
	h.mu.Unlock()
	if err := h.stop(ep, tag); err != nil {
		return err
	}
	_, err := h.start(ep.net.vni, tag)
	return err
}

// liveByVNI adds the host's live endpoints to counts.
func (h *simHost) liveByVNI(counts map[uint32]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ep := range h.live {
		counts[ep.net.vni]++
	}
}

// jitter is d plus up to half of it, so hosts that failed together do not
// retry together.
func jitter(d time.Duration) time.Duration { return d + mrand.N(d/2+1) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// randomMAC is a unicast, locally administered MAC, as vxbridge makes for
// an endpoint docker gave none (every endpoint of the run has its own, so
// the harness can tell them apart in the observers' kernels).
func randomMAC() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	b[0] = b[0]&0xfe | 0x02
	return net.HardwareAddr(b).String()
}
