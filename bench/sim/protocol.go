package sim

// The synthetic hosts' records and control protocol. simhosts appends one
// Record per line (JSON) to its -records file for every endpoint it
// publishes or withdraws, and answers HTTP on its -control unix socket:
//
//	GET  /status  -> Status
//	POST /churn   ChurnRequest -> ChurnResult (returns when the churn ends)
//	POST /add     AddRequest -> AddResult (returns when they are in etcd)

// Record is one endpoint write of a synthetic host.
type Record struct {
	Op   string `json:"op"` // OpAdd or OpDel
	Tag  string `json:"tag,omitempty"`
	Host string `json:"host"`
	VNI  uint32 `json:"vni"`
	MAC  string `json:"mac"`
	IP   string `json:"ip"`
	// Published is when Publish or Withdraw was called; Committed when the
	// host's cluster client first reported everything published so far in
	// etcd after that (Client.Synced): the etcd transaction committed
	// before Committed, by at most one round trip of that client, or one
	// write round when the host had several changes in flight. Unix ns.
	Published int64 `json:"published_ns"`
	Committed int64 `json:"committed_ns"`
}

// Record operations.
const (
	OpAdd = "add"
	OpDel = "del"
)

// Status is the synthetic hosts' state.
type Status struct {
	Hosts int `json:"hosts"`
	// Ready counts hosts whose networks are claimed and whose first
	// endpoints are published.
	Ready int `json:"ready"`
	// Endpoints is the live endpoints by VNI.
	Endpoints map[uint32]int `json:"endpoints"`
	// Pending counts writes not yet reported in etcd.
	Pending   int    `json:"pending"`
	Errors    int    `json:"errors"`
	LastError string `json:"last_error,omitempty"`
	// Watchers is how many hosts follow the cluster (-watchers), and
	// Views how many views their watches delivered.
	Watchers int   `json:"watchers"`
	Views    int64 `json:"views"`
}

// ChurnRequest asks for Rate container starts per second, each with one
// stop (the lifetime policy picks which), for Seconds, on hosts' endpoints
// of the given VNIs (all when empty).
type ChurnRequest struct {
	Rate    float64  `json:"rate"`
	Seconds float64  `json:"seconds"`
	VNIs    []uint32 `json:"vnis,omitempty"`
	Tag     string   `json:"tag,omitempty"`
}

// ChurnResult is what a churn did. Skipped counts ticks dropped because
// too many operations were still running (the synthetic hosts could not
// keep the rate). Pending counts writes still not in etcd a while after
// the churn ended (Unsettled says how long): etcd did not keep up.
type ChurnResult struct {
	Starts    int     `json:"starts"`
	Stops     int     `json:"stops"`
	Errors    int     `json:"errors"`
	Skipped   int     `json:"skipped"`
	Seconds   float64 `json:"seconds"`
	Pending   int     `json:"pending,omitempty"`
	Unsettled string  `json:"unsettled,omitempty"`
}

// AddRequest asks for Count new endpoints in network VNI, one on each of
// Count hosts, kept (markers).
type AddRequest struct {
	VNI   uint32 `json:"vni"`
	Count int    `json:"count"`
	Tag   string `json:"tag,omitempty"`
}

// AddResult names the new endpoints by MAC.
type AddResult struct {
	MACs []string `json:"macs"`
}
