// Package status is the model of what a running vxbridge holds (networks,
// endpoints, bridges, VXLAN peers) as `vxbridge status` shows it, its table
// and JSON renderings, and the client that asks a running plugin for it over
// its unix socket (POST /VxBridge.Status, a path docker never calls).
//
// The model is plain data with no dependencies, so the driver fills it
// without importing anything above it. Cross-host parts are optional: a nil
// Cluster means the plugin runs single-host, and every rendering says so
// instead of showing an empty section.
package status

import "strings"

// Path is the plugin endpoint that answers with a Report.
const Path = "/VxBridge.Status"

// Report is one snapshot of a running plugin.
type Report struct {
	Version string `json:"version"`
	// StateFile is the plugin's bbolt file, as the plugin sees it.
	StateFile string     `json:"state_file,omitempty"`
	Networks  []Network  `json:"networks"`
	Endpoints []Endpoint `json:"endpoints"`
	// Cluster is nil on a single-host plugin (no etcd, no VXLAN).
	Cluster *Cluster `json:"cluster,omitempty"`
	// Firewall says which firewall backend the plugin programs (legacy, nft, nftables).
	Firewall Firewall `json:"firewall"`
	// Ownership is the state file's identity and what start-up decided
	// about the kernel's objects (ownership.go).
	Ownership *Ownership `json:"ownership,omitempty"`
}

// Network is one vxbridge network and the health of its bridge.
type Network struct {
	ID       string   `json:"id"`
	Bridge   string   `json:"bridge"`
	Subnets  []string `json:"subnets"`
	MTU      int      `json:"mtu"` // 0: kernel default (1500)
	Internal bool     `json:"internal"`
	ICC      bool     `json:"icc"`
	// Endpoints counts the network's endpoints in the state file.
	Endpoints int `json:"endpoints"`
	// VNI is the VXLAN id of a cross-host network, 0 for a local one.
	VNI int `json:"vni,omitempty"`
	// NetNS is the network's own namespace, holding its bridge, VXLAN
	// device and endpoint veths ("": the host's namespace).
	NetNS  string `json:"netns,omitempty"`
	Health Health `json:"health"`
}

// Endpoint is one container interface and the health of its veth.
type Endpoint struct {
	ID        string `json:"id"`
	NetworkID string `json:"network_id"`
	HostVeth  string `json:"host_veth"`
	MAC       string `json:"mac"`
	IPv4      string `json:"ipv4,omitempty"`
	IPv6      string `json:"ipv6,omitempty"`
	Joined    bool   `json:"joined"`
	Health    Health `json:"health"`
}

// Cluster is the cross-host part: etcd and the VXLAN peers.
type Cluster struct {
	Etcd  Etcd   `json:"etcd"`
	VTEP  string `json:"vtep,omitempty"` // this host's VXLAN endpoint address
	Peers []Peer `json:"peers"`
	// FDBEntries and NeighborEntries count what the plugin programmed for
	// its peers.
	FDBEntries      int `json:"fdb_entries"`
	NeighborEntries int `json:"neighbor_entries"`
	// RemoteEndpoints counts the other hosts' endpoint records of its
	// networks; Programming is "eager" (an entry for each, permanent) or
	// "on-demand" (entries for the peers talked to, which the kernel ages).
	RemoteEndpoints int    `json:"remote_endpoints"`
	Programming     string `json:"peer_programming,omitempty"`
	// Conflicts are records of other hosts that claim a MAC or an address
	// an older record (or this host) holds: refused, never programmed.
	Conflicts []Conflict `json:"conflicts,omitempty"`
	// LostBlocks are address blocks another host took while this host's
	// lease had lapsed, with this host's container addresses still in
	// them: each may be handed out twice.
	LostBlocks []LostBlock `json:"lost_blocks,omitempty"`
	// OldHosts run a vxbridge from before records by network: this host
	// cannot see their endpoints until they are upgraded.
	OldHosts []string `json:"old_hosts,omitempty"`
	// ConflictsTotal counts the claims refused since the start.
	ConflictsTotal uint64 `json:"conflicts_total"`
	// WatchEvents and WatchListings count what this host's network
	// watches received since the start.
	WatchEvents   uint64 `json:"watch_events"`
	WatchListings uint64 `json:"watch_listings"`
	// Names are the other hosts' container names this host's DNS server
	// answers for its containers, and DNS what it did (nil: no server).
	Names []Name    `json:"names,omitempty"`
	DNS   *DNSStats `json:"dns,omitempty"`
	// HostAddrs are this host's own addresses in its cross-host networks:
	// what it sends into a network leaves from them, and the other hosts
	// program them like a container of this host.
	HostAddrs []HostAddr `json:"host_addrs,omitempty"`
}

// HostAddr is this host's own address(es) in one cross-host network.
type HostAddr struct {
	Network   string   `json:"network"` // the VNI
	MAC       string   `json:"mac"`     // of the link holding them
	Addresses []string `json:"addresses"`
}

// Name is a container name of another host, answered on one network.
type Name struct {
	Network   string   `json:"network"` // the VNI
	Name      string   `json:"name"`    // "<container>.<network>"
	Addresses []string `json:"addresses"`
}

// DNSStats counts what the DNS server of cross-host networks did since the
// start.
type DNSStats struct {
	Port      int    `json:"port"`
	Answered  uint64 `json:"answered"`  // names of other hosts answered
	Forwarded uint64 `json:"forwarded"` // passed on to their upstream, and answered
	Failed    uint64 `json:"failed"`    // passed on, and the upstream did not answer
	Dropped   uint64 `json:"dropped"`   // not redirected, or too many at once
}

// The ways peers are programmed (--peer-programming).
const (
	ProgrammingEager    = "eager"
	ProgrammingOnDemand = "on-demand"
)

// Conflict is one refused claim.
type Conflict struct {
	Network  string `json:"network"`  // the VNI
	Endpoint string `json:"endpoint"` // "<host>/<endpoint id>" of the refused record
	What     string `json:"what"`     // "mac" or "address"
	Value    string `json:"value"`
	HeldBy   string `json:"held_by"`
}

// LostBlock is an address block of this host's that another host took.
type LostBlock struct {
	Pool      string   `json:"pool"`
	Block     string   `json:"block"`
	HeldBy    string   `json:"held_by"`
	Addresses []string `json:"addresses"` // this host's container addresses in it
}

// Etcd is the plugin's view of its etcd connection.
type Etcd struct {
	Endpoints []string `json:"endpoints"`
	Connected bool     `json:"connected"`
	Error     string   `json:"error,omitempty"`
}

// Peer is one remote host's VXLAN endpoint.
type Peer struct {
	Host     string   `json:"host"`
	VTEP     string   `json:"vtep"`
	Networks []string `json:"networks,omitempty"`
	Health   Health   `json:"health"`
}

// Firewall describes the firewall backend in use.
type Firewall struct {
	Backend string `json:"backend"`          // "legacy", "nft" or "default"
	Reason  string `json:"reason,omitempty"` // why that backend was chosen
}

// Health is ok, or a short reason it is not.
type Health struct {
	OK      bool   `json:"ok"`
	Problem string `json:"problem,omitempty"`
}

// Healthy is the zero-problem Health.
func Healthy() Health { return Health{OK: true} }

// Unhealthy is a Health with a reason.
func Unhealthy(problem string) Health { return Health{Problem: problem} }

// String renders a health cell: "ok" or "PROBLEM: reason".
func (h Health) String() string {
	if h.OK {
		return "ok"
	}
	return "PROBLEM: " + h.Problem
}

// Problems lists every unhealthy item of r, one line each.
func (r *Report) Problems() []string {
	var out []string
	for _, n := range r.Networks {
		if !n.Health.OK {
			out = append(out, "network "+short(n.ID)+" (bridge "+n.Bridge+"): "+n.Health.Problem)
		}
	}
	for _, ep := range r.Endpoints {
		if !ep.Health.OK {
			out = append(out, "endpoint "+short(ep.ID)+" (veth "+ep.HostVeth+"): "+ep.Health.Problem)
		}
	}
	if c := r.Cluster; c != nil {
		if !c.Etcd.Connected {
			out = append(out, "etcd not connected: "+c.Etcd.Error)
		}
		for _, p := range c.Peers {
			if !p.Health.OK {
				out = append(out, "peer "+p.Host+" ("+p.VTEP+"): "+p.Health.Problem)
			}
		}
		for _, x := range c.Conflicts {
			out = append(out, "vxlan.id "+x.Network+": "+x.Endpoint+" claims "+x.What+" "+x.Value+" held by "+x.HeldBy+" (refused)")
		}
		for _, x := range c.LostBlocks {
			out = append(out, "address block "+x.Block+" of pool "+x.Pool+" was taken by host "+x.HeldBy+" while this host's lease had lapsed; these addresses of this host's containers may be handed out twice: "+
				strings.Join(x.Addresses, ","))
		}
		if len(c.OldHosts) > 0 {
			out = append(out, "hosts on a vxbridge from before records by network (upgrade them; their containers are unreachable from here): "+
				strings.Join(c.OldHosts, ","))
		}
	}
	return out
}

func short(id string) string { return id[:min(12, len(id))] }
