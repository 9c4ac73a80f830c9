package main

// Start-up's ownership decision (package ownership) and the first reconcile
// that carries it out: between opening the state file and serving, the
// only moment where a state file that does not match the kernel can cost
// running containers their network.

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/ownership"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/store"
)

// decideOwnership counts the kernel's vxbridge objects by the state file
// that made them and decides what start-up does with them; it logs the
// decision in one line, and a refusal is the error serve exits with
// (exitRefused), the kernel untouched.
func decideOwnership(cfg *serveConfig, drv *driver.Driver, db *store.DB, log *slog.Logger) (decision, error) {
	kernel, err := drv.Census()
	if err != nil {
		return decision{}, fmt.Errorf("count vxbridge's links, rules and namespaces before the first reconcile: %w", err)
	}
	d := ownership.Decide(ownership.Input{State: db.Origin(), Path: db.Path(), Kernel: kernel, Adopt: cfg.adopt, Purge: cfg.purge})
	out := decision{Decision: d, Status: status.Ownership{Identity: db.Identity(), Decision: d.Action.String(), Message: d.Message, Kernel: kernel}}
	switch d.Action {
	case ownership.Refuse:
		log.Error("start-up refused", "decision", d.Action, "msg", d.Message)
		return out, fmt.Errorf("%w: %s", ownership.ErrRefused, d.Message)
	case ownership.Proceed:
		log.Info("state and kernel", "decision", d.Action, "msg", d.Message)
	default:
		log.Warn("state and kernel", "decision", d.Action, "msg", d.Message)
	}
	if cfg.adopt || cfg.purge {
		log.Warn("remove " + ownership.FlagAdopt + " and " + ownership.FlagPurge + " (VXBRIDGE_ADOPT, VXBRIDGE_PURGE_FOREIGN) once this start is done: " +
			"left set, every start adopts or deletes what no record claims, leftovers of this state's own crashes included")
	}
	return out, nil
}

// decision is start-up's, with what `vxbridge status` and doctor show of it.
type decision struct {
	ownership.Decision
	Status status.Ownership
}

// startUp runs the first reconcile as decided. Only a store it cannot read
// stops the start; a reconcile without errors settles a rollback the
// decision dealt with and, when the decision allows, writes the last good
// copy.
func startUp(drv *driver.Driver, db *store.DB, d decision, log *slog.Logger) error {
	rep, err := drv.Start(d.Action)
	if rep == nil {
		return fmt.Errorf("read state: %w", err)
	}
	if err != nil {
		log.Error("start-up reconcile incomplete; serving anyway", "err", err)
	}
	log.Info("state loaded", "networks", rep.Networks, "endpoints", rep.Endpoints, "removed_links", rep.RemovedLinks,
		"adopted", rep.Adopted, "taken_over", len(rep.TakenOver), "kept", rep.Kept)
	if err != nil {
		return nil
	}
	if o := db.Origin(); o.Rollback != "" && rollbackSettled(d.Action, rep) {
		if err := db.AcceptRollback(); err != nil {
			log.Warn("rollback not marked as dealt with; the next start keeps unclaimed objects again", "err", err)
		} else {
			log.Info("state file's rollback dealt with", "rollback", o.Rollback)
		}
	}
	if d.GoodCopy {
		if err := db.SaveGoodCopy(); err != nil {
			log.Warn("last good copy not written", "err", err)
		}
	}
	return nil
}

// rollbackSettled: after a reconcile without errors, a state file that went
// back in time no longer needs its objects kept once they were adopted or
// purged, or when none of its own was found unclaimed.
func rollbackSettled(a ownership.Action, rep *driver.ReconcileReport) bool {
	return a == ownership.Adopt || a == ownership.Purge || rep.KeptOwn == 0
}

// adoptedPool is the IPAM's way to the pool of a network adopted without
// its pool (ipam.Options.AdoptedPool): the records' addresses in prefix,
// the gateway's and the endpoints', when a network has that subnet.
func adoptedPool(db *store.DB) func(prefix netip.Prefix) (gateways, endpoints []netip.Addr, ok bool) {
	return func(prefix netip.Prefix) (gateways, endpoints []netip.Addr, ok bool) {
		nets, err := db.Networks()
		if err != nil {
			return nil, nil, false
		}
		for _, n := range nets {
			for _, s := range n.Subnets() {
				if s.Pool == prefix && n.Options[driver.OptAdopted] != "" {
					ok = true
					if s.Gateway.IsValid() {
						gateways = append(gateways, s.Gateway.Addr())
					}
				}
			}
		}
		if !ok {
			return nil, nil, false
		}
		eps, err := db.Endpoints()
		if err != nil {
			return nil, nil, false
		}
		for _, ep := range eps {
			for _, a := range []netip.Prefix{ep.IPv4, ep.IPv6} {
				if a.IsValid() && prefix.Contains(a.Addr()) {
					endpoints = append(endpoints, a.Addr())
				}
			}
		}
		return gateways, endpoints, true
	}
}
