package driver

import (
	"fmt"
	"net/netip"

	"github.com/vxbridge/vxbridge/store"
)

// ForgottenCandidates lists the endpoints docker may have forgotten while
// the plugin was down; CollectForgotten, called a few seconds later, deletes
// those still forgotten. Call it at start-up, before serving: an endpoint
// joined after that is never a candidate.
//
// Docker never replays or retries Leave/DeleteEndpoint for a container it
// removed while the plugin was unreachable: it gives the container end of
// the veth back to this namespace (moby's osl moves a sandbox's interfaces
// back under their original name before deleting the sandbox) and moves on.
// So a joined endpoint whose container end (PeerVeth) is in this namespace
// is no longer in any sandbox. Two moments look the same but are not
// forgotten, hence the second look: the instant between a Join reply and
// docker moving the interface into the container (a crash just after the
// reply), and the instant between docker moving it back and its Leave (which
// docker delivers once the plugin answers again, and then releases the
// address itself).
//
// An endpoint created but never joined has its peer here too, by design;
// the orphan collection (package orphans) handles it.
func (d *Driver) ForgottenCandidates() ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	eps, err := d.store.Endpoints()
	if err != nil {
		return nil, err
	}
	var out []string
	for i := range eps {
		if here, err := d.forgotten(&eps[i]); err != nil {
			return nil, err
		} else if here {
			out = append(out, eps[i].ID)
		}
	}
	return out, nil
}

// forgotten: a joined endpoint whose container end is in this namespace.
func (d *Driver) forgotten(ep *store.Endpoint) (bool, error) {
	if !forgottenCandidate(ep) {
		return false, nil
	}
	_, here, err := d.links.Link(ep.PeerVeth)
	if err != nil {
		return false, fmt.Errorf("look up %s of endpoint %s: %w", ep.PeerVeth, short(ep.ID), err)
	}
	return here, nil
}

// CollectForgotten deletes the endpoints of ids (from ForgottenCandidates)
// that are still forgotten, and returns them so the caller can free their
// IPAM addresses.
func (d *Driver) CollectForgotten(ids []string) ([]store.Endpoint, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []store.Endpoint
	var errs []error
	for _, id := range ids {
		ep, err := d.store.Endpoint(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ep == nil {
			continue // docker's own Leave and DeleteEndpoint came meanwhile
		}
		if here, err := d.forgotten(ep); err != nil || !here {
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := d.deleteEndpoint(ep); err != nil {
			errs = append(errs, fmt.Errorf("delete forgotten endpoint %s: %w", short(ep.ID), err))
			continue
		}
		d.log.Warn("endpoint forgotten by docker while vxbridge was down: deleted",
			"network", short(ep.NetworkID), "endpoint", ep.ID, "sandbox", ep.Sandbox, "peer", ep.PeerVeth)
		out = append(out, *ep)
	}
	return out, joinErrs(errs)
}

// forgottenCandidate: only a joined endpoint with a known peer name can be
// told forgotten.
func forgottenCandidate(ep *store.Endpoint) bool { return ep.Joined && ep.PeerVeth != "" }

func joinErrs(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%d forgotten endpoint(s) not collected: %v", len(errs), errs)
}

// DeleteUnjoined deletes endpoint id if it exists and is still not joined,
// reporting whether it did: the orphan collector's way to remove an
// endpoint docker created and then forgot (package orphans). Checked under
// the endpoint's lock, so a Join that arrives first keeps it.
func (d *Driver) DeleteUnjoined(id string) (bool, error) {
	defer d.lockEndpoint(id)()
	ep, err := d.store.Endpoint(id)
	if err != nil || ep == nil || ep.Joined {
		return false, err
	}
	if err := d.deleteEndpoint(ep); err != nil {
		return false, err
	}
	d.log.Warn("endpoint created but never joined: deleted (docker rolled it back while vxbridge could not hear it)",
		"network", short(ep.NetworkID), "endpoint", ep.ID)
	return true, nil
}

// DropUnjoined deletes every endpoint of the network on pool that holds addr
// and is not joined, because docker is releasing addr: it has given that
// endpoint up. This is how a CreateEndpoint whose reply a crash cut off ends:
// docker's retry fails (it sends an empty body), docker releases the address
// and never sends DeleteEndpoint for an endpoint it never saw created. Call
// it before the address is freed, so no new endpoint can hold it yet.
func (d *Driver) DropUnjoined(pool netip.Prefix, addr netip.Addr) {
	for _, id := range d.addrs.holders(addr) {
		ep, err := d.store.Endpoint(id)
		if err != nil {
			d.log.Error("look at an endpoint claiming a released address", "endpoint", id, "address", addr, "err", err)
			continue
		}
		if ep == nil || ep.Joined {
			continue
		}
		n, err := d.store.Network(ep.NetworkID)
		if err != nil || n == nil || !onPool(n, pool) {
			continue
		}
		if _, err := d.DeleteUnjoined(ep.ID); err != nil {
			d.log.Error("delete endpoint whose address docker released", "endpoint", ep.ID, "address", addr, "err", err)
		}
	}
}

func onPool(n *store.Network, pool netip.Prefix) bool {
	for _, s := range n.Subnets() {
		if s.Pool.Masked() == pool.Masked() {
			return true
		}
	}
	return false
}
