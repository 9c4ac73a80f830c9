package main

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	helpers "github.com/docker/go-plugins-helpers/ipam"

	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/ipam"
	"github.com/vxbridge/vxbridge/store"
)

// forgottenLook is how long after start-up the endpoints docker may have
// forgotten are looked at again (driver.ForgottenCandidates): long enough
// for docker to move an interface it was given just before a crash into its
// container, and to deliver the Leave, DeleteEndpoint and ReleaseAddress it
// kept retrying while the plugin was down (its plugin client backs off 1, 2,
// 4, 8 then 16 s between tries, for 30 s): collecting before a retried
// ReleaseAddress arrives could free an address another container got
// meanwhile.
const forgottenLook = 20 * time.Second

// collectForgotten deletes, forgottenLook after start-up, the candidates
// found then (cands) that docker did forget (driver.CollectForgotten), and
// frees their addresses in vxbridge's IPAM, whose ReleaseAddress docker also
// could not deliver. Errors are logged: the records stay and `vxbridge
// status` shows them.
func collectForgotten(ctx context.Context, drv *driver.Driver, db *store.DB, ip *ipam.Driver, log *slog.Logger, cands []string) {
	if len(cands) == 0 {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(forgottenLook):
	}
	gone, err := drv.CollectForgotten(cands)
	if err != nil {
		log.Error("collecting endpoints docker forgot", "err", err)
	}
	if len(gone) == 0 {
		return
	}
	pools, err := db.Pools()
	if err != nil {
		log.Error("list IPAM pools to free forgotten endpoints' addresses", "err", err)
		return
	}
	for _, ep := range gone {
		releaseEndpointAddrs(ep, pools, db, ip, log)
	}
}

// releaseEndpointAddrs frees a deleted endpoint's addresses in vxbridge's
// IPAM (those docker could not release itself), logging what it did. An
// address another endpoint record holds is left alone: docker released it
// already and handed it on.
func releaseEndpointAddrs(ep store.Endpoint, pools []store.Pool, db *store.DB, ip *ipam.Driver, log *slog.Logger) {
	others, err := db.Endpoints()
	if err != nil {
		log.Error("list endpoints before freeing a deleted endpoint's addresses", "endpoint", ep.ID, "err", err)
		return
	}
	held := map[netip.Addr]bool{}
	for _, o := range others {
		held[o.IPv4.Addr()], held[o.IPv6.Addr()] = true, true
	}
	for _, pfx := range []netip.Prefix{ep.IPv4, ep.IPv6} {
		if !pfx.IsValid() || held[pfx.Addr()] {
			continue
		}
		for _, rel := range forgottenReleases(pools, pfx.Addr(), db.Addresses) {
			if err := ip.ReleaseAddress(&rel); err != nil {
				log.Error("free address of deleted endpoint", "endpoint", ep.ID, "pool", rel.PoolID, "address", rel.Address, "err", err)
				continue
			}
			log.Info("freed address of deleted endpoint", "endpoint", ep.ID, "pool", rel.PoolID, "address", rel.Address)
		}
	}
}

// forgottenReleases is the pure part: the releases that free addr, only in
// a vxbridge pool where it is taken as an endpoint address, dynamic or
// static (--ip) (a network on another IPAM driver has no such pool; a
// gateway or aux reservation stays).
func forgottenReleases(pools []store.Pool, addr netip.Addr, taken func(poolID string) (map[netip.Addr]store.AddressKind, error)) []helpers.ReleaseAddressRequest {
	var out []helpers.ReleaseAddressRequest
	for _, p := range pools {
		if !p.Prefix.Contains(addr) {
			continue
		}
		t, err := taken(p.ID)
		if k := t[addr]; err != nil || (k != store.KindEndpoint && k != store.KindStatic) {
			continue
		}
		out = append(out, helpers.ReleaseAddressRequest{PoolID: p.ID, Address: addr.String()})
	}
	return out
}
