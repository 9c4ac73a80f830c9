package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vxbridge/vxbridge/status"
)

var (
	descNetworks  = prometheus.NewDesc("vxbridge_networks", "Networks in the state file.", nil, nil)
	descEndpoints = prometheus.NewDesc("vxbridge_endpoints", "Endpoints in the state file.", nil, nil)
	descUnhealthy = prometheus.NewDesc("vxbridge_unhealthy",
		"Items `vxbridge status` reports as unhealthy (missing bridge or veth, disconnected peer...), by kind.",
		[]string{"kind"}, nil)
	descCluster = prometheus.NewDesc("vxbridge_cluster_enabled", "1 when cross-host (etcd, VXLAN) is configured.", nil, nil)
	descPeers   = prometheus.NewDesc("vxbridge_vxlan_peers", "Remote VXLAN endpoints known.", nil, nil)
	descFDB     = prometheus.NewDesc("vxbridge_fdb_entries", "VXLAN FDB entries programmed for peers.", nil, nil)
	descNeigh   = prometheus.NewDesc("vxbridge_neighbor_entries", "Neighbour (ARP/NDP) entries programmed for peers.", nil, nil)
	descEtcd    = prometheus.NewDesc("vxbridge_etcd_connected", "1 when the etcd connection is up (cross-host only).", nil, nil)
)

// stateCollector turns a status snapshot into gauges at scrape time.
type stateCollector struct {
	snapshot func() (*status.Report, error)
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNetworks, descEndpoints, descUnhealthy, descCluster, descPeers, descFDB, descNeigh, descEtcd} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	r, err := c.snapshot()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descNetworks, err)
		return
	}
	for _, s := range stateSamples(r) {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, s.value, s.labels...)
	}
}

type sample struct {
	desc   *prometheus.Desc
	value  float64
	labels []string
}

// stateSamples is the collector's pure part.
func stateSamples(r *status.Report) []sample {
	var badNets, badEps, badPeers float64
	for _, n := range r.Networks {
		if !n.Health.OK {
			badNets++
		}
	}
	for _, ep := range r.Endpoints {
		if !ep.Health.OK {
			badEps++
		}
	}
	out := []sample{
		{descNetworks, float64(len(r.Networks)), nil},
		{descEndpoints, float64(len(r.Endpoints)), nil},
		{descUnhealthy, badNets, []string{"network"}},
		{descUnhealthy, badEps, []string{"endpoint"}},
	}
	c := r.Cluster
	if c == nil {
		// Single-host: no peers and no entries, truthfully 0; no etcd gauge,
		// which would read as "disconnected".
		return append(out, sample{descCluster, 0, nil}, sample{descPeers, 0, nil},
			sample{descFDB, 0, nil}, sample{descNeigh, 0, nil}, sample{descUnhealthy, 0, []string{"peer"}})
	}
	for _, p := range c.Peers {
		if !p.Health.OK {
			badPeers++
		}
	}
	return append(out, sample{descCluster, 1, nil}, sample{descPeers, float64(len(c.Peers)), nil},
		sample{descFDB, float64(c.FDBEntries), nil}, sample{descNeigh, float64(c.NeighborEntries), nil},
		sample{descEtcd, boolValue(c.Etcd.Connected), nil}, sample{descUnhealthy, badPeers, []string{"peer"}})
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
