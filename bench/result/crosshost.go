package result

// CrossHost is figure 4: the data path between containers (or hosts) on two
// namespace hosts joined by a veth underlay, several paths interleaved in
// rounds. Ratios are against the Anchor path of the same run.
type CrossHost struct {
	Rounds       int             `json:"rounds"`
	IperfSeconds int             `json:"iperf_seconds"` // per iperf3 test, after 1 s omitted
	PingCount    int             `json:"ping_count"`    // echo requests per path per round
	PingInterval float64         `json:"ping_interval_s"`
	Anchor       string          `json:"anchor"`
	Paths        []CrossHostPath `json:"paths"`
	// Settings found on the hosts during the run (MTUs, offloads,
	// br_netfilter), for reading the numbers.
	Settings map[string]string `json:"settings,omitempty"`
}

// CrossHostPath is one path over all rounds.
type CrossHostPath struct {
	Name string `json:"name"`
	What string `json:"what"`
	MTU  int    `json:"mtu"` // of the sender's interface
	// Gbps is the median over rounds of iperf3's received rate.
	Gbps        float64   `json:"gbps"`
	GbpsRounds  []float64 `json:"gbps_rounds"`
	Retransmits []int     `json:"retransmits_rounds"`
	// RTT pools every echo of every round (busybox ping, per-packet times).
	RTT         Dist    `json:"rtt"`
	PingLost    int     `json:"ping_lost"`
	GbpsRatio   float64 `json:"gbps_ratio_vs_anchor"`
	RTTP50Ratio float64 `json:"rtt_p50_ratio_vs_anchor"`
}

// Convergence is figure 5: how soon a container started on host A is
// reachable from a container already running on host B, and how soon a host
// that is cut off disappears from the other host's tables.
type Convergence struct {
	Starts int `json:"starts"` // per driver
	// ProbeIntervalMs is the prober's echo interval: the resolution.
	ProbeIntervalMs float64 `json:"probe_interval_ms"`
	// NamesIntervalMs is the name prober's query interval (0: that of
	// ProbeIntervalMs, in runs before it had its own).
	NamesIntervalMs float64             `json:"names_interval_ms,omitempty"`
	Drivers         []ConvergenceDriver `json:"drivers"`
	// HostTTLSeconds is vxbridge's --host-ttl in the run.
	HostTTLSeconds float64       `json:"host_ttl_s"`
	CutOff         []CutOffDrain `json:"cut_off"`
}

// ConvergenceDriver is one network driver's starts. Each start is seen by
// two probers: one on host B (the other host: what is measured) and one on
// host A itself (the same network on the same host: when the container was
// reachable at all).
type ConvergenceDriver struct {
	Driver string `json:"driver"`
	// Reach is the time from `docker run -d` returning on A until the
	// prober on B had its first echo reply, negative values (reachable
	// before docker run returned) counted as 0.
	Reach Dist `json:"reach"`
	// ReachRawMs are the unclamped samples.
	ReachRawMs   []float64 `json:"reach_raw_ms"`
	BeforeReturn int       `json:"reachable_before_run_returned"`
	// Lag is B's first reply minus A's own prober's first reply: how long
	// after the container was reachable on its host it became reachable
	// from the other host (the cross-host part; negative values as 0).
	Lag      Dist      `json:"lag_vs_same_host"`
	LagRawMs []float64 `json:"lag_raw_ms"`
	// FromRunStart is B's first reply minus the start of `docker run -d`.
	FromRunStart Dist `json:"from_run_start"`
	// LocalFromRunStart is A's own prober's first reply minus the start
	// of `docker run -d`: when the container answered at all.
	LocalFromRunStart Dist `json:"local_from_run_start"`
	// Programmed is when B's VXLAN FDB got the container's MAC (`bridge
	// -timestamp monitor fdb` on B) minus the start of `docker run -d`,
	// and Lead how long before A's own first reply that was (negative:
	// after); LeadMinMs is the smallest lead.
	Programmed Dist    `json:"programmed_from_run_start"`
	Lead       Dist    `json:"programmed_lead"`
	LeadMinMs  float64 `json:"programmed_lead_min_ms"`
	Missed     int     `json:"missed"` // not reachable within the wait
	// Run is the wall time of `docker run -d` itself on A.
	Run Dist `json:"docker_run"`
	// Gone is the time from `docker rm -f` returning on A until B's
	// forwarding table no longer holds the container's MAC (polled);
	// GoneMissed counts removals still in B's table after the wait.
	Gone       Dist    `json:"removed_gone"`
	GoneMissed int     `json:"removed_not_gone"`
	GoneWaitS  float64 `json:"removed_wait_s"`
	// Named is the time from `docker run -d` returning on A until a
	// prober on B, asking docker's embedded DNS every probe interval, got
	// the container's address by its name (negative as 0; raw samples in
	// NamedRawMs); NameGone from `docker rm -f` returning until an answer
	// held it no more.
	Named          Dist      `json:"named"`
	NamedRawMs     []float64 `json:"named_raw_ms"`
	NamedMissed    int       `json:"named_missed"`
	NameGone       Dist      `json:"name_gone"`
	NameGoneMissed int       `json:"name_not_gone"`
}

// CutOffDrain is the time from cutting host A off (its daemons killed with
// SIGKILL, its underlay link down) until B's tables hold nothing of A.
type CutOffDrain struct {
	Driver   string  `json:"driver"`
	What     string  `json:"what"`
	Ms       float64 `json:"ms"`
	TimedOut bool    `json:"timed_out"`
	WaitedMs float64 `json:"waited_ms"`
}
