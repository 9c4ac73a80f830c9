package result

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Sim is figure 6: cross-host networks at many hosts. One process
// (bench/simhosts) plays Hosts synthetic vxbridge hosts against a real etcd,
// each a real cluster client writing what a vxbridge host writes, starting
// and stopping containers at Rate per second cluster-wide; one to three real
// plugins (the observers) are members of some of the networks, driven
// through their socket as dockerd drives them, and measured. Every design
// (the checkout, and the "before" anchor built from a pinned commit) runs
// the same points in the same run, one after the other.
type Sim struct {
	Designs        []SimDesign `json:"designs"`
	PerHost        int         `json:"endpoints_per_host"`
	Rate           float64     `json:"starts_per_second"` // and as many stops
	Policy         string      `json:"lifetime_policy"`
	Observers      int         `json:"observers"`
	QuietSeconds   float64     `json:"quiet_s"`
	ChurnSeconds   float64     `json:"churn_s"`
	ForeignSeconds float64     `json:"foreign_s"`
	SimWatchers    int         `json:"sim_watchers"` // synthetic hosts that also watch
	EtcdDataDir    string      `json:"etcd_data_dir"`
	Short          bool        `json:"short,omitempty"`
	Points         []SimPoint  `json:"points"`
	// Limits says where the sweep stopped and why.
	Limits []string `json:"limits,omitempty"`
}

// SimDesign is one build of plugin and synthetic hosts.
type SimDesign struct {
	Name   string `json:"name"`   // "current" (this checkout), "on-demand" (the same, peers programmed on demand) or "before"
	Commit string `json:"commit"` // the commit built; "" for the checkout
	What   string `json:"what"`
}

// SimPoint is one design at one size and shape.
type SimPoint struct {
	Design    string `json:"design"`
	Shape     string `json:"shape"` // "3of20": each host in 3 of 20 networks
	Hosts     int    `json:"hosts"`
	EtcdNodes int    `json:"etcd_members"`
	// Endpoints is the synthetic endpoints alive, cluster-wide.
	Endpoints       int     `json:"endpoints"`
	PopulateSeconds float64 `json:"populate_s"`
	// Churn is what the synthetic hosts did in the churn phase.
	Churn     SimChurn      `json:"churn"`
	Observers []SimObserver `json:"observers"`
	Etcd      SimEtcd       `json:"etcd"`
	// SimCPU is the synthetic hosts' process CPU in the churn phase (cores),
	// SimRSSKiB its resident memory.
	SimCPU    float64 `json:"sim_cpu_cores"`
	SimRSSKiB int     `json:"sim_rss_kib"`
	// MachineBusy is every CPU's busy time in the churn phase, in cores
	// (/proc/stat: this point's processes and whatever else ran).
	MachineBusy float64 `json:"machine_busy_cores"`
	// Limit, when set, says why the point could not be measured (the
	// machine's limit, not a failure of the harness): larger sizes of its
	// shape are not run. Ended says why a point stopped after its churn
	// (the later phases would have measured a backlog).
	Limit string `json:"limit,omitempty"`
	Ended string `json:"ended,omitempty"`
}

// SimChurn is one phase's churn as the synthetic hosts did it.
type SimChurn struct {
	Starts  int     `json:"starts"`
	Stops   int     `json:"stops"`
	Errors  int     `json:"errors"`
	Skipped int     `json:"skipped"`
	Seconds float64 `json:"seconds"`
	// Commit is publish-to-commit of the synthetic hosts' writes (their
	// cluster client's round trip, etcd's write).
	Commit Dist `json:"publish_to_commit"`
	// Pending is writes still not in etcd a minute after the phase.
	Pending int `json:"pending,omitempty"`
}

// SimObserver is one real plugin's view of the point.
type SimObserver struct {
	Name     string `json:"name"`
	Networks int    `json:"networks"`
	// Remote is the endpoints of other hosts in its networks; FDB and
	// Neigh what its VXLAN devices held after the churn settled.
	Remote int `json:"remote_endpoints"`
	FDB    int `json:"fdb_entries"`
	Neigh  int `json:"neigh_entries"`
	// CreateNetworkMs is its CreateNetwork calls (joining the populated
	// cluster), InitialSyncMs from the first until every remote endpoint
	// was programmed.
	CreateNetworkMs float64 `json:"create_network_ms"`
	InitialSyncMs   float64 `json:"initial_sync_ms"`
	InitialTimedOut bool    `json:"initial_sync_timed_out,omitempty"`
	// CPU in cores (CPU seconds per second) while the cluster was quiet
	// (with the observer's own calls, and idle: without), churning, and
	// churning only in networks no observer is in (no own calls).
	CPUQuiet   float64 `json:"cpu_quiet_cores"`
	CPUIdle    float64 `json:"cpu_idle_cores"`
	CPUChurn   float64 `json:"cpu_churn_cores"`
	CPUForeign float64 `json:"cpu_foreign_cores"`
	// CPUPerChange is the churn's extra CPU (over quiet) per remote
	// endpoint change (start or stop) in its networks, ms.
	CPUPerChangeMs float64 `json:"cpu_ms_per_remote_change"`
	// WaitChurn is how long its threads waited for a CPU while runnable
	// in the churn phase, in cores: CPU it wanted and the machine did not
	// give it then.
	WaitChurn     float64 `json:"cpu_wait_churn_cores"`
	RemoteChanges int     `json:"remote_changes"`
	RSSKiB        int     `json:"rss_kib"`
	RSSMaxKiB     int     `json:"rss_max_kib"`
	// Converge is a remote endpoint's commit in etcd to both its FDB and
	// neighbour entries in the observer's kernel (netlink notifications
	// in the network's namespace); FromPublish counts from the synthetic
	// host's Publish call; Gone from a withdraw's commit to both deleted.
	Converge    Dist `json:"converge"`
	FromPublish Dist `json:"converge_from_publish"`
	Gone        Dist `json:"gone"`
	Missed      int  `json:"missed"`       // added, not seen by the end of the phase's wait
	GoneMissed  int  `json:"gone_missed"`  // withdrawn, not seen deleted
	MonitorLost bool `json:"monitor_lost"` // the netlink monitor overflowed
	// The observer's own docker calls on one of its networks, with the
	// cluster quiet and churning.
	QuietCalls map[string]Dist `json:"quiet_calls"`
	ChurnCalls map[string]Dist `json:"churn_calls"`
	// Foreign: its underlay's received bytes per write in networks it is
	// not in, over the quiet rate (0: it receives none of them).
	ForeignWrites        int     `json:"foreign_writes"`
	ForeignBytesPerWrite float64 `json:"foreign_rx_bytes_per_write"`
	// Re-list: etcd restarted (all members), and the observer's etcd
	// connection cut while etcd compacted past it. Back is from etcd
	// healthy (restart) or the underlay back up (compaction) until markers
	// written meanwhile were programmed; Reconnect until its connection to
	// etcd was established again; Relists counts its "listing again" log
	// lines (the design of the time logs them; -1 when not counted).
	RestartBackMs   float64 `json:"restart_back_ms"`
	RestartRelists  int     `json:"restart_relists"`
	CompactBackMs   float64 `json:"compact_back_ms"`
	CompactReconnMs float64 `json:"compact_reconnect_ms"`
	CompactRelists  int     `json:"compact_relists"`
	RelistTimedOut  bool    `json:"relist_timed_out,omitempty"`
	// First packet to remote endpoints not talked to before, asked for
	// from the network's bridge as a container would: FirstARP until the
	// ARP request was answered, FirstFDB from the first frame to the peer
	// until the VXLAN device had its FDB entry (0 when it had it already).
	FirstARP          Dist `json:"first_arp"`
	FirstFDB          Dist `json:"first_fdb"`
	FirstPacketFailed int  `json:"first_packet_failed,omitempty"`
}

// SimEtcd is etcd in the churn phase.
type SimEtcd struct {
	EventsPerSecond float64 `json:"events_per_s"` // sent to watchers, all members
	Watchers        int     `json:"watchers"`
	WatchStreams    int     `json:"watch_streams"`
	Keys            int     `json:"keys"`
	DBBytes         int64   `json:"db_bytes"`
	CPU             float64 `json:"cpu_cores"`      // all members
	Wait            float64 `json:"cpu_wait_cores"` // runnable, waiting for a CPU
	RSSKiB          int     `json:"rss_kib"`        // all members
	SentBytesPerSec float64 `json:"grpc_sent_bytes_per_s"`
	// ForeignEventsPerWrite is events sent per write in the foreign phase.
	ForeignEventsPerWrite float64 `json:"foreign_events_per_write"`
	FDs                   int     `json:"fds"` // open files, all members
}

// Where names a point in Limits: "design, shape, H=hosts, etcd xN".
func (p SimPoint) Where() string {
	return fmt.Sprintf("%s, %s, H=%d, etcd x%d", p.Design, p.Shape, p.Hosts, p.EtcdNodes)
}

// KeepSim completes s, a run of part of a sweep, with what earlier holds
// of the rest: earlier's points (and their limits) that s did not measure
// again, and the designs they name. The settings of the runs must match:
// both measure the same cluster at other points.
func (s *Sim) KeepSim(earlier *Sim) error {
	if earlier == nil {
		return nil
	}
	if s.PerHost != earlier.PerHost || s.Rate != earlier.Rate || s.ChurnSeconds != earlier.ChurnSeconds || s.Observers != earlier.Observers || s.Short != earlier.Short {
		return fmt.Errorf("the earlier figure 6 ran other settings (%d endpoints per host, %.0f starts/s, %.0f s of churn, %d observers, short %v; now %d, %.0f, %.0f, %d, %v): run the whole sweep",
			earlier.PerHost, earlier.Rate, earlier.ChurnSeconds, earlier.Observers, earlier.Short, s.PerHost, s.Rate, s.ChurnSeconds, s.Observers, s.Short)
	}
	measured := map[string]bool{}
	for _, p := range s.Points {
		measured[p.Where()] = true
	}
	var points []SimPoint
	for _, p := range earlier.Points {
		if !measured[p.Where()] {
			points = append(points, p)
		}
	}
	var limits []string
	for _, l := range earlier.Limits {
		where, _, _ := strings.Cut(l, ":")
		if !measured[where] {
			limits = append(limits, l)
		}
	}
	s.Points, s.Limits = append(points, s.Points...), append(limits, s.Limits...)
	slices.SortStableFunc(s.Points, func(a, b SimPoint) int {
		return cmp.Or(cmp.Compare(a.Hosts, b.Hosts), cmp.Compare(b.Shape, a.Shape), cmp.Compare(a.EtcdNodes, b.EtcdNodes))
	})
	have := map[string]bool{}
	for _, d := range s.Designs {
		have[d.Name] = true
	}
	for _, d := range earlier.Designs {
		if !have[d.Name] {
			s.Designs = append(s.Designs, d)
		}
	}
	return nil
}
