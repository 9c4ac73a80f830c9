package main

import (
	"context"
	"log/slog"
	"time"

	helpers "github.com/docker/go-plugins-helpers/ipam"

	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/ipam"
	"github.com/vxbridge/vxbridge/orphans"
	"github.com/vxbridge/vxbridge/store"
)

// collectOrphans frees, until ctx ends, what package orphans finds left
// for nobody: endpoints created but never joined, and endpoint addresses no
// endpoint holds, each once it has stayed so for grace. grace 0 turns it off.
func collectOrphans(ctx context.Context, drv *driver.Driver, db *store.DB, ip *ipam.Driver, log *slog.Logger, grace time.Duration) {
	if grace <= 0 {
		return
	}
	// Four looks per grace period: a candidate goes at most a quarter of
	// the grace late.
	every := min(max(grace/4, time.Second), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	var tr orphans.Tracker
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := orphanPass(&tr, drv, db, ip, log, grace); err != nil {
			log.Error("orphan collection pass", "err", err)
		}
	}
}

func orphanPass(tr *orphans.Tracker, drv *driver.Driver, db *store.DB, ip *ipam.Driver, log *slog.Logger, grace time.Duration) error {
	st := orphans.State{Taken: db.Addresses}
	var err error
	if st.Networks, err = db.Networks(); err != nil {
		return err
	}
	if st.Endpoints, err = db.Endpoints(); err != nil {
		return err
	}
	if st.Pools, err = db.Pools(); err != nil {
		return err
	}
	found, err := tr.Pass(st, time.Now(), grace)
	if err != nil {
		return err
	}
	for _, ep := range found.Unjoined {
		deleted, err := drv.DeleteUnjoined(ep.ID)
		if err != nil {
			log.Error("delete endpoint never joined", "endpoint", ep.ID, "err", err)
			continue
		}
		if deleted {
			releaseEndpointAddrs(ep, st.Pools, db, ip, log)
		}
	}
	for _, id := range found.Pools {
		if err := ip.ReleasePool(&helpers.ReleasePoolRequest{PoolID: id}); err != nil {
			log.Error("free pool no network uses", "pool", id, "err", err)
			continue
		}
		log.Warn("freed a pool that stayed without any address for "+grace.String()+
			" (stored by a plugin that died before replying)", "pool", id)
	}
	for _, a := range found.Addresses {
		if err := ip.ReleaseAddress(&helpers.ReleaseAddressRequest{PoolID: a.PoolID, Address: a.Addr.String()}); err != nil {
			log.Error("free address no endpoint holds", "pool", a.PoolID, "address", a.Addr, "err", err)
			continue
		}
		log.Warn("freed an endpoint address no endpoint held for "+grace.String()+
			" (a reply a crash cut off, or a release vxbridge could not hear)", "pool", a.PoolID, "address", a.Addr)
	}
	return nil
}
