package driver

import (
	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/store"
)

// Links makes and removes bridges and veths (package bridge, over netlink).
// Every method is idempotent: ensure-style creates, deletes that succeed on
// missing links.
type Links interface {
	EnsureBridge(cfg bridge.BridgeConfig) error
	// DeleteBridge removes the bridge only when its alias says vxbridge owns it.
	DeleteBridge(name, alias string) error
	// EnsureGateway configures the host end of a network's gateway link
	// (made by EnsureVeth from the network's namespace) as the bridge
	// would be; DeleteGateway removes it, the pair with it.
	EnsureGateway(cfg bridge.BridgeConfig) error
	DeleteGateway(name, alias string) error
	EnsureVeth(cfg bridge.VethConfig) error
	// AddVeth is EnsureVeth for a pair that most likely does not exist
	// yet: one creating request first.
	AddVeth(cfg bridge.VethConfig) error
	DeleteLink(name string) error
	// RetireLink deletes a link in the background, batched with others
	// (cheaper for the kernel, and the caller does not wait); a missing
	// link is success. Flush waits until every retired link is gone.
	RetireLink(name string) error
	Flush()
	// PurgeUnfinished deletes links a crash left half-built (created, not
	// yet aliased), after Flush. Only when no Ensure* call can run.
	PurgeUnfinished() error
	// Link reports whether a link exists and, if so, its alias and master.
	Link(name string) (bridge.LinkInfo, bool, error)
	// OwnedLinks lists every link whose alias starts with prefix.
	OwnedLinks(prefix string) ([]bridge.LinkInfo, error)
	// SetAlias changes link name's alias from `from` to `to` (another
	// state file's link taken over); a link with another alias is left
	// alone with an error, a missing one is success.
	SetAlias(name, from, to string) error
	// Inspect reads a link back, a veth's peer wherever it is: what the
	// records of an adopted network or endpoint are made from.
	Inspect(name string) (bridge.Found, bool, error)
	EnableForwarding(ipv6 bool) error
	// Routes lists what the host reaches, by interface: its routes and
	// own addresses (no network's subnet may overlap them).
	Routes() ([]bridge.Route, error)
}

// Firewall manages the iptables chains vxbridge owns (package firewall).
type Firewall interface {
	EnsureNetwork(n firewall.Network) error
	RemoveNetwork(id string) error
	// Reconcile makes the plugin's chains hold the rules of nets and of the
	// published ports, and deletes the other rules owns says are the
	// caller's.
	Reconcile(nets []firewall.Network, ports []firewall.Ports, owns func(firewall.OwnedRule) bool) error
	// OwnedRules lists the rules carrying a vxbridge comment, whoever's.
	OwnedRules() ([]firewall.OwnedRule, error)
	// EnsurePorts installs the rules of one endpoint's published ports and
	// drops that endpoint's other port rules.
	EnsurePorts(p firewall.Ports) error
	// RemovePorts deletes an endpoint's port rules and the conntrack
	// entries of the connections its mappings DNAT'ed.
	RemovePorts(p firewall.Ports) error
	// EnsureJumps puts the jumps into vxbridge's chains back in place (after
	// DOCKER-USER, above docker's own per-network rules).
	EnsureJumps() error
}

// Store persists the network and endpoint records (package store).
type Store interface {
	SaveNetwork(n *store.Network) error
	Network(id string) (*store.Network, error)
	Networks() ([]store.Network, error)
	DeleteNetwork(id string) error
	SaveEndpoint(ep *store.Endpoint) error
	Endpoint(id string) (*store.Endpoint, error)
	Endpoints() ([]store.Endpoint, error)
	DeleteEndpoint(id string) error
}

// NetNS is the namespace of its own that a cross-host network has, with
// the components (links, VXLAN devices) that work in it.
type NetNS interface {
	Links() Links
	VXLAN() VXLAN
	// Prepare re-applies the namespace's settings (br_netfilter off:
	// dockerd may load the module after the namespace was made, and its
	// default is on). Idempotent.
	Prepare() error
}

// Namespaces manages the networks' own namespaces (package namespace):
// named, kept across plugin restarts.
type Namespaces interface {
	// Ensure returns namespace name, created and prepared if missing.
	Ensure(name string) (NetNS, error)
	// Open returns namespace name if it exists; found is false if not.
	Open(name string) (ns NetNS, found bool, err error)
	// Delete removes the namespace and closes what Ensure opened in it;
	// its links go with it. A missing one is success.
	Delete(name string) error
	// List returns the names of the namespaces there are.
	List() ([]string, error)
	// HostFd is an open handle of the plugin's own namespace: the veth ends
	// docker moves into containers are created there.
	HostFd() int
}
