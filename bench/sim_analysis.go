package bench

import (
	"net/netip"
	"time"

	"github.com/vxbridge/vxbridge/bench/result"
	"github.com/vxbridge/vxbridge/bench/sim"
)

// convergence is one observer's view of one phase's writes.
type convergence struct {
	fromCommit, fromPublish, gone []float64 // ms
	missed, goneMissed            int
	changes                       int // writes in the observer's networks
}

// kernelTimes says when a MAC's entries were added to and deleted from an
// observer's kernel (neighMonitor).
type kernelTimes interface {
	added(mac string) (time.Time, bool)
	deleted(mac string, ip netip.Addr, since time.Time) (time.Time, bool)
}

// converge matches the synthetic hosts' writes in the networks vnis with
// what the observer's kernel did: an added endpoint converged when both
// its FDB and neighbour entries were there, a withdrawn one when both were
// gone. Times before the commit stamp (the kernel was faster than the
// writer's own acknowledgement) are kept as they are, negative.
func converge(recs []sim.Record, vnis map[uint32]bool, k kernelTimes) convergence {
	var c convergence
	for _, r := range recs {
		if !vnis[r.VNI] {
			continue
		}
		c.changes++
		if r.Op == sim.OpDel {
			ip, _ := netip.ParseAddr(r.IP)
			if at, ok := k.deleted(r.MAC, ip, time.Unix(0, r.Published)); ok {
				c.gone = append(c.gone, msSince(r.Committed, at))
			} else {
				c.goneMissed++
			}
			continue
		}
		if at, ok := k.added(r.MAC); ok {
			c.fromCommit = append(c.fromCommit, msSince(r.Committed, at))
			c.fromPublish = append(c.fromPublish, msSince(r.Published, at))
		} else {
			c.missed++
		}
	}
	return c
}

func msSince(ns int64, at time.Time) float64 { return ms(at.Sub(time.Unix(0, ns))) }

// commitTimes is the publish-to-commit time of each record, ms.
func commitTimes(recs []sim.Record) []float64 {
	out := make([]float64, 0, len(recs))
	for _, r := range recs {
		out = append(out, float64(r.Committed-r.Published)/1e6)
	}
	return out
}

// cores is CPU time per wall time.
func cores(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return cpu.Seconds() / wall.Seconds()
}

// perChangeMs is the CPU a phase took beyond the quiet rate, per change.
func perChangeMs(cpu, wall time.Duration, quietCores float64, changes int) float64 {
	if changes == 0 {
		return 0
	}
	extra := cpu.Seconds() - quietCores*wall.Seconds()
	return max(extra, 0) * 1000 / float64(changes)
}

// callDists keeps the calls figure 6 reports.
func callDists(s *samples) map[string]result.Dist {
	out := map[string]result.Dist{}
	for _, c := range []string{"NetworkDriver.CreateEndpoint", "NetworkDriver.Join"} {
		out[c] = result.Summarise(s.calls[c])
	}
	return out
}

// vniSet is the set of the networks' VNIs.
func vniSet(nets []*obsNet) map[uint32]bool {
	m := map[uint32]bool{}
	for _, n := range nets {
		m[n.VNI] = true
	}
	return m
}
