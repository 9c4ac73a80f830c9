// Package peers programs the other hosts' endpoints of each cross-host
// network into that network's VXLAN device, from the network's records in
// etcd.
//
// # Design notes
//
// One follower per cross-host network this host has, and none for the
// others: the follower follows that network's records alone
// (cluster.Client.FollowNetwork watches the network's own key prefix), so a
// host pays for the changes of its own networks only, whatever the size of
// the cluster. Each change is applied as a delta: the entries of the one
// peer it concerns are added, replaced or removed (table.go computes them
// from indexes by MAC and address; no view is cloned, nothing is scanned).
//
// Each follower has one worker goroutine that applies its network's changes
// in etcd's order, so programming is serialised per network, and runs
// outside the driver's lock: the watch hands changes to the worker's queue
// and returns, and the driver's calls (Attach, Detach, SetLocal, Resync)
// only queue work too. A docker call never waits for peer programming.
//
// The full comparison with the kernel (Resync: dump the device's entries,
// plan against the desired table, apply) is the safety net, run by the
// reconciler every --reconcile-interval and after a kernel write failed; it
// is bounded per network: one network's entries, one device's dump.
package peers

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/vxlan"
)

// Kernel is the table of VXLAN devices in one network namespace (package
// vxlan). Apply deletes missing entries as success.
type Kernel interface {
	Apply(device string, c vxlan.Changes) error
	Entries(device string) (vxlan.Table, error)
}

// MissWatcher is a Kernel that reports misses (vxlan.Manager): needed for
// Config.OnDemand.
type MissWatcher interface {
	WatchMisses(ctx context.Context, device string, fn func(vxlan.Miss)) error
}

// Source gives one network's records (cluster.Client).
type Source interface {
	FollowNetwork(ctx context.Context, vni uint32, sink cluster.NetworkSink)
}

// Network is a cross-host network this host has, as the driver knows it.
type Network struct {
	ID       string
	VNI      uint32
	Device   string // its VXLAN device
	Subnets  []netip.Prefix
	Gateways []netip.Addr
	// Kernel is where Device is (the network's own namespace, or the
	// host's).
	Kernel Kernel
}

// Config configures a Manager.
type Config struct {
	Self     string     // this host's id
	SelfVTEP netip.Addr // this host's VTEP: records pointing at it are refused
	// VTEPCIDRs, if set, are the underlay's prefixes: member records with
	// a VTEP outside them are refused.
	VTEPCIDRs []netip.Prefix
	Source    Source
	Logger    *slog.Logger
	// OnDemand programs a peer's entries only when the kernel reports a
	// miss for it (a container of this host talks to it; the VXLAN device is
	// made with vxlan.Device.OnDemand), as transient entries the kernel ages
	// out when unused; changes of records only update or remove entries
	// already there. Off: every peer's entries are programmed at once
	// (permanent).
	OnDemand bool
	// NeighLimits, if set, is called (from a worker, never under the
	// driver's lock) with the number of neighbour entries every network
	// together asks for, whenever it grows past what was last reported.
	NeighLimits func(total int)
	// OnVTEPs, if set, is called (from one goroutine of its own) with the
	// VTEPs of every followed network's other member hosts, sorted,
	// whenever they change, once every followed network is listed
	// (vteps.go); following is false once the last network is detached.
	OnVTEPs func(vteps []netip.Addr, following bool)
}

// Manager runs one follower per cross-host network.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu   sync.Mutex
	nets map[uint32]*follower
	// exited holds the done channel of a detached follower per VNI, so a
	// follower of the same VNI attached again starts after it stopped.
	exited    map[uint32]<-chan struct{}
	neighs    map[uint32]int
	neighSeen int
	vteps     map[uint32][]netip.Addr // each listed network's member VTEPs
	vtepKick  chan struct{}
	vtepDone  chan struct{} // closed when the reporter stops (nil: none runs)

	conflicts atomic.Uint64
	index     namesIndex // the networks' names by subnet, for NamesFor
}

// Conflicts counts the claims refused since the start: records that asked
// for a MAC or an address an older record (or this host) holds.
func (m *Manager) Conflicts() uint64 { return m.conflicts.Load() }

// New returns a Manager; its followers run until Close.
func New(cfg Config) *Manager {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{cfg: cfg, log: log, ctx: ctx, cancel: cancel, nets: map[uint32]*follower{}, exited: map[uint32]<-chan struct{}{},
		neighs: map[uint32]int{}, vteps: map[uint32][]netip.Addr{}, vtepKick: make(chan struct{}, 1)}
	if cfg.OnVTEPs != nil {
		m.vtepDone = make(chan struct{})
		go m.reportVTEPs()
	}
	return m
}

// Close stops every follower and waits for them; the kernel entries stay.
func (m *Manager) Close() {
	m.cancel()
	m.mu.Lock()
	var done []<-chan struct{}
	for _, f := range m.nets {
		done = append(done, f.done)
	}
	for _, d := range m.exited {
		done = append(done, d)
	}
	m.mu.Unlock()
	for _, d := range done {
		<-d
	}
	if m.vtepDone != nil {
		<-m.vtepDone
	}
}

// Attach starts following network n, or takes its new settings (a device
// re-created, a namespace opened again) and compares it with the kernel.
// It never waits.
func (m *Manager) Attach(n Network) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.nets[n.VNI]; f != nil {
		if f.net.ID == n.ID {
			f.post(op{kind: opAttach, net: n})
			return
		}
		m.detachLocked(n.VNI)
	}
	f := newFollower(m, n)
	m.nets[n.VNI] = f
	m.reindexLocked()
	go f.run(m.exited[n.VNI])
}

// Detach stops following network vni; its entries go with its device. It
// never waits.
func (m *Manager) Detach(vni uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.detachLocked(vni)
}

func (m *Manager) detachLocked(vni uint32) {
	f := m.nets[vni]
	if f == nil {
		return
	}
	f.cancel()
	delete(m.nets, vni)
	delete(m.neighs, vni)
	delete(m.vteps, vni)
	m.reindexLocked()
	m.exited[vni] = f.done
	m.kickVTEPs()
}

// SetLocal tells network vni's follower this host's own endpoint addresses
// and MACs: records of other hosts claiming them are refused. It never
// waits.
func (m *Manager) SetLocal(vni uint32, ips []netip.Addr, macs []string) {
	if f := m.follower(vni); f != nil {
		f.post(op{kind: opLocal, ips: ips, macs: macs})
	}
}

// Resync compares every network's device with its records and repairs
// the difference, in the followers' own goroutines. It never waits.
func (m *Manager) Resync() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range m.nets {
		f.post(op{kind: opResync})
	}
}

func (m *Manager) follower(vni uint32) *follower {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nets[vni]
}

// Status is one network's peer state, for vxbridge status.
type Status struct {
	VNI        uint32
	Listed     bool // a listing of the network's records arrived
	Members    int  // other hosts of the network
	Endpoints  int  // their endpoint records
	FDB, Neigh int  // entries programmed
	Conflicts  []Conflict
	Applied    uint64 // changes applied since the start
	Misses     uint64 // misses answered (on-demand programming)
	LastError  string // of the last kernel write, "" after a success
	// Peers are the other member hosts, sorted by host id.
	Peers []Peer
	// Names are the other hosts' container names this host answers for
	// (package names), sorted.
	Names []NameEntry
}

// Peer is another member host of a network.
type Peer struct {
	Host   string
	VTEP   netip.Addr
	Usable bool // its VTEP passes the checks (unicast, not loopback, ...)
}

// Status returns every followed network's state, by VNI.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	fs := make([]*follower, 0, len(m.nets))
	for _, f := range m.nets {
		fs = append(fs, f)
	}
	m.mu.Unlock()
	out := make([]Status, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VNI < out[j].VNI })
	return out
}

// noteNeighs records network vni's neighbour entries and calls NeighLimits
// when the total grew past what it last reported.
func (m *Manager) noteNeighs(vni uint32, n int) {
	m.mu.Lock()
	if _, ok := m.nets[vni]; !ok {
		m.mu.Unlock()
		return
	}
	m.neighs[vni] = n
	total := 0
	for _, c := range m.neighs {
		total += c
	}
	grew := total > m.neighSeen
	if grew {
		m.neighSeen = total
	}
	m.mu.Unlock()
	if grew && m.cfg.NeighLimits != nil {
		m.cfg.NeighLimits(total)
	}
}

// MACTaken says whether a record of another host in network vni has mac
// (in any case, eligible or not): a MAC this host derives for a new
// endpoint must not be one of them. It never waits for the worker.
func (m *Manager) MACTaken(vni uint32, mac string) bool {
	f := m.follower(vni)
	if f == nil {
		return false
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return false
	}
	f.macMu.Lock()
	defer f.macMu.Unlock()
	return f.macs[hw.String()] > 0
}
