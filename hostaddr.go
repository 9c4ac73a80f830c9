package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	helpers "github.com/docker/go-plugins-helpers/ipam"

	"github.com/vxbridge/vxbridge/ipam"
	"github.com/vxbridge/vxbridge/store"
)

// hostAddresses takes this host's own address in a cross-host network's
// subnet through the IPAM, as docker takes a container's: from this host's
// address blocks, in the state file, freed with the pool. Which address it
// took is kept in the state file's meta, so a restart finds the same one.
type hostAddresses struct {
	db *store.DB
	mu sync.Mutex
	ip *ipam.Driver // set once the IPAM is made (after the driver)
}

func hostAddrKey(poolID string) string { return "crosshost.hostaddr." + poolID }

// HostAddress implements driver.HostAddresses.
func (h *hostAddresses) HostAddress(_ context.Context, pool netip.Prefix) (netip.Addr, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ip == nil {
		return netip.Addr{}, errors.New("the IPAM is not ready yet")
	}
	p, err := h.poolOf(pool)
	if err != nil {
		return netip.Addr{}, err
	}
	if v, err := h.db.Meta(hostAddrKey(p.ID)); err == nil && v != "" {
		if a, err := netip.ParseAddr(v); err == nil && h.stillOurs(p.ID, a) {
			return a, nil
		}
	}
	resp, err := h.ip.RequestAddress(&helpers.RequestAddressRequest{PoolID: p.ID})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("take an address of pool %s for this host: %w", pool, err)
	}
	got, err := netip.ParsePrefix(resp.Address)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("address %q of pool %s: %w", resp.Address, pool, err)
	}
	if err := h.db.SetMeta(hostAddrKey(p.ID), got.Addr().String()); err != nil {
		return netip.Addr{}, err
	}
	return got.Addr(), nil
}

func (h *hostAddresses) poolOf(prefix netip.Prefix) (store.Pool, error) {
	pools, err := h.db.Pools()
	if err != nil {
		return store.Pool{}, err
	}
	for _, p := range pools {
		if p.Prefix.Masked() == prefix.Masked() {
			return p, nil
		}
	}
	return store.Pool{}, fmt.Errorf("no vxbridge IPAM pool %s", prefix)
}

// stillOurs says whether a is still taken in the pool and held by no
// endpoint (a pool released and requested again may have given it out).
func (h *hostAddresses) stillOurs(poolID string, a netip.Addr) bool {
	taken, err := h.db.Addresses(poolID)
	if err != nil || taken[a] == "" {
		return false
	}
	eps, err := h.db.Endpoints()
	if err != nil {
		return false
	}
	for _, ep := range eps {
		if ep.IPv4.Addr() == a || ep.IPv6.Addr() == a {
			return false
		}
	}
	return true
}

// setIPAM hands the IPAM over once it is made.
func (h *hostAddresses) setIPAM(ip *ipam.Driver) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ip = ip
}
