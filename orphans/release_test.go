package orphans

import (
	"net/netip"
	"testing"

	"github.com/vxbridge/vxbridge/store"
)

func TestEndpointReleases(t *testing.T) {
	pools := []store.Pool{
		{ID: "vxbridge-local/10.1.0.0/24", Prefix: netip.MustParsePrefix("10.1.0.0/24")},
		{ID: "vxbridge-local/10.2.0.0/24", Prefix: netip.MustParsePrefix("10.2.0.0/24")},
	}
	taken := map[string]map[netip.Addr]store.AddressKind{
		"vxbridge-local/10.1.0.0/24": {
			netip.MustParseAddr("10.1.0.1"): store.KindGateway,
			netip.MustParseAddr("10.1.0.5"): store.KindEndpoint,
			netip.MustParseAddr("10.1.0.6"): store.KindStatic,
			netip.MustParseAddr("10.1.0.7"): store.KindAux,
		},
	}
	lookup := func(id string) (map[netip.Addr]store.AddressKind, error) { return taken[id], nil }
	for addr, want := range map[string]string{
		"10.1.0.5": "vxbridge-local/10.1.0.0/24", // an endpoint address: freed
		"10.1.0.6": "vxbridge-local/10.1.0.0/24", // an --ip address: freed
		"10.1.0.7": "",                           // an aux reservation stays
		"10.1.0.1": "",                           // the gateway stays
		"10.1.0.9": "",                           // not taken
		"10.2.0.5": "",                           // in a pool, not taken there
		"10.3.0.5": "",                           // another IPAM driver's network
	} {
		rel := endpointReleases(pools, netip.MustParseAddr(addr), lookup)
		switch {
		case want == "" && len(rel) != 0:
			t.Errorf("%s: releases %+v, want none", addr, rel)
		case want != "" && (len(rel) != 1 || rel[0].PoolID != want || rel[0].Address != addr):
			t.Errorf("%s: releases %+v, want one in %s", addr, rel, want)
		}
	}
}
