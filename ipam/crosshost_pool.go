package ipam

import (
	"net/netip"

	"github.com/vxbridge/vxbridge/store"
)

// CrossHostPool is the pool policy for BlockConfig.CrossHost: a pool is
// cross-host (its dynamic addresses come from address blocks leased in
// etcd) when it is the subnet of a cross-host network (one with a VNI) in
// the network driver's records, which networks lists. Records that cannot
// be read make the pool local: the allocation then stays on this host.
func CrossHostPool(networks func() ([]store.Network, error)) func(netip.Prefix) bool {
	return func(p netip.Prefix) bool {
		nets, err := networks()
		if err != nil {
			return false
		}
		for _, n := range nets {
			if n.VNI == 0 {
				continue
			}
			for _, s := range n.Subnets() {
				if s.Pool == p {
					return true
				}
			}
		}
		return false
	}
}
