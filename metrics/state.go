package metrics

import (
	"sync"
	"time"

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
	descConf    = prometheus.NewDesc("vxbridge_peer_conflicts",
		"Records of other hosts refused now because an older record (or this host) holds their MAC or address.", nil, nil)
	descConfTotal = prometheus.NewDesc("vxbridge_peer_conflicts_total",
		"Claims of a MAC or an address refused since the start (see vxbridge status, REFUSED CLAIMS).", nil, nil)
	descEvents = prometheus.NewDesc("vxbridge_etcd_watch_events_total",
		"etcd watch events received for the cross-host networks this host has (it watches no other).", nil, nil)
	descLists = prometheus.NewDesc("vxbridge_etcd_network_listings_total",
		"Listings of a cross-host network's records (at start, after a compaction or a broken watch).", nil, nil)
	descLost = prometheus.NewDesc("vxbridge_ipam_lost_blocks",
		"Address blocks of this host's that another host took while its lease had lapsed: its containers there may share an address with the other host's (vxbridge status lists them).", nil, nil)
	descNames = prometheus.NewDesc("vxbridge_dns_names",
		"Container names of other hosts the DNS server of cross-host networks answers.", nil, nil)
	descDNS = prometheus.NewDesc("vxbridge_dns_queries_total",
		"DNS queries of cross-host networks' containers redirected to vxbridge, by result: answered (a name of another host), "+
			"forwarded (passed on to the upstream, which answered), failed (the upstream did not), dropped (not redirected, or too many at once).",
		[]string{"result"}, nil)
)

// snapshotMaxAge is how long scrapes share one status snapshot: each
// snapshot lists the records and the kernel's links, so a flood of scrapes
// (many Prometheus servers, a tight scrape interval, a loop) costs at most
// one a second of the CPU docker's calls need.
const snapshotMaxAge = time.Second

// stateCollector turns a status snapshot into gauges at scrape time.
type stateCollector struct {
	snapshot func() (*status.Report, error)

	mu     sync.Mutex // held while a snapshot is taken: concurrent scrapes wait for it and share it
	report *status.Report
	err    error
	at     time.Time
}

// current is a snapshot at most snapshotMaxAge old.
func (c *stateCollector) current() (*status.Report, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || time.Since(c.at) >= snapshotMaxAge {
		c.report, c.err = c.snapshot()
		c.at = time.Now()
	}
	return c.report, c.err
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNetworks, descEndpoints, descUnhealthy, descCluster, descPeers, descFDB, descNeigh, descEtcd,
		descConf, descConfTotal, descEvents, descLists, descLost, descNames, descDNS} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	r, err := c.current()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descNetworks, err)
		return
	}
	for _, s := range stateSamples(r) {
		kind := prometheus.GaugeValue
		if s.counter {
			kind = prometheus.CounterValue
		}
		ch <- prometheus.MustNewConstMetric(s.desc, kind, s.value, s.labels...)
	}
}

type sample struct {
	desc    *prometheus.Desc
	value   float64
	labels  []string
	counter bool
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
		gauge(descNetworks, float64(len(r.Networks))),
		gauge(descEndpoints, float64(len(r.Endpoints))),
		gauge(descUnhealthy, badNets, "network"),
		gauge(descUnhealthy, badEps, "endpoint"),
	}
	c := r.Cluster
	if c == nil {
		// Single-host: no peers and no entries, truthfully 0; no etcd gauge,
		// which would read as "disconnected".
		return append(out, gauge(descCluster, 0), gauge(descPeers, 0),
			gauge(descFDB, 0), gauge(descNeigh, 0), gauge(descUnhealthy, 0, "peer"))
	}
	for _, p := range c.Peers {
		if !p.Health.OK {
			badPeers++
		}
	}
	out = append(out, gauge(descCluster, 1), gauge(descPeers, float64(len(c.Peers))),
		gauge(descFDB, float64(c.FDBEntries)), gauge(descNeigh, float64(c.NeighborEntries)),
		gauge(descEtcd, boolValue(c.Etcd.Connected)), gauge(descUnhealthy, badPeers, "peer"),
		gauge(descConf, float64(len(c.Conflicts))), counter(descConfTotal, float64(c.ConflictsTotal)),
		counter(descEvents, float64(c.WatchEvents)), counter(descLists, float64(c.WatchListings)),
		gauge(descLost, float64(len(c.LostBlocks))))
	if d := c.DNS; d != nil {
		out = append(out, gauge(descNames, float64(len(c.Names))),
			counter(descDNS, float64(d.Answered), "answered"), counter(descDNS, float64(d.Forwarded), "forwarded"),
			counter(descDNS, float64(d.Failed), "failed"), counter(descDNS, float64(d.Dropped), "dropped"))
	}
	return out
}

func gauge(d *prometheus.Desc, v float64, labels ...string) sample {
	return sample{desc: d, value: v, labels: labels}
}

func counter(d *prometheus.Desc, v float64, labels ...string) sample {
	return sample{desc: d, value: v, labels: labels, counter: true}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
