package orphans

import (
	"context"
	"fmt"
	"time"

	"github.com/vxbridge/vxbridge/store"
)

// Endpoints left while vxbridge was down. Docker never replays or retries
// Leave/DeleteEndpoint for a container it removed while the plugin was
// unreachable: it gives the container end of the veth back to the plugin's
// namespace (moby's osl moves a sandbox's interfaces back under their
// original name before deleting the sandbox) and moves on. So a joined
// endpoint whose container end (PeerVeth) is in the plugin's namespace is no
// longer in any sandbox.
//
// Two moments look the same but are not orphans, hence a second look
// secondLook later: the instant between a Join reply and docker moving the
// interface into the container (a crash just after the reply), and the
// instant between docker moving it back and its Leave (which docker delivers
// once the plugin answers again, and then releases the address itself).
//
// An endpoint created but never joined has its peer here too, by design:
// Run handles it, after the grace.

// secondLook is how long after start-up the candidates are looked at again:
// long enough for docker to move an interface it was given just before a
// crash into its container, and to deliver the Leave, DeleteEndpoint and
// ReleaseAddress it kept retrying while the plugin was down (its plugin
// client backs off 1, 2, 4, 8 then 16 s between tries, for 30 s): collecting
// before a retried ReleaseAddress arrives could free an address another
// container got meanwhile.
const secondLook = 20 * time.Second

// LeftWhileDown lists the endpoints docker may have left while vxbridge was
// down; CollectLeftWhileDown deletes, secondLook later, those still left.
// Call it at start-up, before serving: an endpoint joined after that is
// never a candidate. (Nothing else runs then, so it reads the records and
// the links without the driver's lock.)
func (c *Collector) LeftWhileDown() ([]string, error) {
	eps, err := c.records.Endpoints()
	if err != nil {
		return nil, err
	}
	var out []string
	for i := range eps {
		if left, err := c.leftWhileDown(&eps[i]); err != nil {
			return nil, err
		} else if left {
			out = append(out, eps[i].ID)
		}
	}
	return out, nil
}

// leftWhileDown: a joined endpoint whose container end is in the plugin's
// namespace. Only one with a known peer name can be told so.
func (c *Collector) leftWhileDown(ep *store.Endpoint) (bool, error) {
	if !ep.Joined || ep.PeerVeth == "" {
		return false, nil
	}
	_, here, err := c.links.Link(ep.PeerVeth)
	if err != nil {
		return false, fmt.Errorf("look up %s of endpoint %s: %w", ep.PeerVeth, short(ep.ID), err)
	}
	return here, nil
}

// CollectLeftWhileDown deletes, secondLook after start-up, the candidates
// (from LeftWhileDown) that docker did leave, and frees their addresses
// through rel: docker could not deliver their ReleaseAddress either. Errors
// are logged: the records stay and `vxbridge status` shows them.
func (c *Collector) CollectLeftWhileDown(ctx context.Context, rel Releaser, cands []string) {
	if len(cands) == 0 {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(secondLook):
	}
	c.collectLeft(rel, cands)
}

// collectLeft is CollectLeftWhileDown's second look: each candidate is
// looked at again and deleted under the driver's exclusive lock.
func (c *Collector) collectLeft(rel Releaser, cands []string) {
	gone, err := c.drv.DeleteEndpointsIf(cands, c.leftWhileDown)
	if err != nil {
		c.log.Error("collecting endpoints left while vxbridge was down", "err", err)
	}
	for _, ep := range gone {
		c.log.Warn("endpoint left by docker while vxbridge was down: deleted",
			"network", short(ep.NetworkID), "endpoint", ep.ID, "sandbox", ep.Sandbox, "peer", ep.PeerVeth)
	}
	if len(gone) == 0 {
		return
	}
	pools, err := c.records.Pools()
	if err != nil {
		c.log.Error("list IPAM pools to free the addresses of endpoints left while vxbridge was down", "err", err)
		return
	}
	for _, ep := range gone {
		c.releaseEndpointAddrs(ep, pools, rel)
	}
}
