// Package fakes holds in-memory stand-ins for the kernel components (links,
// firewall) that satisfy driver.Links and driver.Firewall: the driver tier's
// fakes, and those of tests above the driver (plugin/) that need a real
// driver and IPAM over a real store without root. They keep state like the
// kernel would and let a test inject failures; a test reads their exported
// fields (under no concurrent call) or their accessor methods.
package fakes

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net"
	"sort"
	"strings"
	"sync"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/internal/netdev"
)

// Links is an in-memory kernel: links by name.
type Links struct {
	mu      sync.Mutex
	Links   map[string]bridge.LinkInfo
	Bridges map[string]bridge.BridgeConfig
	Veths   map[string]bridge.VethConfig
	// Gateways are the host ends of gateway links (EnsureGateway).
	Gateways map[string]bridge.BridgeConfig
	// Forwarding records EnableForwarding.
	Forwarding bool
	// FailVeth, when set, is what EnsureVeth returns.
	FailVeth error
	// Retired are links RetireLink handed over, deleted at Flush, as the
	// kernel's reaper would.
	Retired []string
	// HostRoutes are what Routes lists besides the bridges' own subnets.
	HostRoutes []bridge.Route
	// Peers are the container ends of veths as a test made them (docker
	// moving one into a container: renamed, addressed); by default a
	// veth's peer has its configured name and MAC and no address.
	Peers map[string]bridge.Peer
}

// NewLinks returns an empty kernel.
func NewLinks() *Links {
	return &Links{Links: map[string]bridge.LinkInfo{}, Bridges: map[string]bridge.BridgeConfig{}, Veths: map[string]bridge.VethConfig{},
		Gateways: map[string]bridge.BridgeConfig{}}
}

// EnsureBridge creates or adopts (same alias) a bridge.
func (f *Links) EnsureBridge(cfg bridge.BridgeConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.Links[cfg.Name]; ok && l.Alias != cfg.Alias {
		return fmt.Errorf("interface %q: %w", cfg.Name, netdev.ErrNotOwned)
	}
	f.Links[cfg.Name] = bridge.LinkInfo{Name: cfg.Name, Alias: cfg.Alias, Kind: "bridge", MTU: cfg.MTU, MAC: nameMAC(cfg.Name)}
	f.Bridges[cfg.Name] = cfg
	return nil
}

// nameMAC is a locally administered MAC that the name decides, as the
// kernel's random one would be per link.
func nameMAC(name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	b := h.Sum(nil)
	return net.HardwareAddr{0x02, 0x00, b[0], b[1], b[2], b[3]}.String()
}

// DeleteBridge removes the bridge when alias matches.
func (f *Links) DeleteBridge(name, alias string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.Links[name]; ok && l.Alias == alias {
		delete(f.Links, name)
		delete(f.Bridges, name)
	}
	return nil
}

// EnsureGateway creates or adopts (same alias) the host end of a gateway
// link: a veth carrying the gateway addresses (the pair's other end, in
// another namespace, is not modelled).
func (f *Links) EnsureGateway(cfg bridge.BridgeConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.Links[cfg.Name]; ok && (l.Alias != cfg.Alias || l.Kind != "veth") {
		return fmt.Errorf("interface %q: %w", cfg.Name, netdev.ErrNotOwned)
	}
	f.Links[cfg.Name] = bridge.LinkInfo{Name: cfg.Name, Alias: cfg.Alias, Kind: "veth", MTU: cfg.MTU}
	f.Gateways[cfg.Name] = cfg
	return nil
}

// DeleteGateway removes a gateway link when alias matches.
func (f *Links) DeleteGateway(name, alias string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.Links[name]; ok && l.Alias == alias && l.Kind == "veth" {
		delete(f.Links, name)
		delete(f.Gateways, name)
	}
	return nil
}

// EnsureVeth creates the host end of a veth on its bridge.
func (f *Links) EnsureVeth(cfg bridge.VethConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.FailVeth != nil {
		return f.FailVeth
	}
	if l, ok := f.Links[cfg.HostName]; ok && l.Alias != cfg.Alias {
		return fmt.Errorf("interface %q: %w", cfg.HostName, netdev.ErrNotOwned)
	}
	if _, ok := f.Bridges[cfg.Bridge]; !ok {
		return fmt.Errorf("bridge %q not found", cfg.Bridge)
	}
	f.Links[cfg.HostName] = bridge.LinkInfo{Name: cfg.HostName, Alias: cfg.Alias, Kind: "veth", Master: cfg.Bridge, MTU: cfg.MTU}
	f.Veths[cfg.HostName] = cfg
	return nil
}

// AddVeth is EnsureVeth: the fake has one way of making a veth.
func (f *Links) AddVeth(cfg bridge.VethConfig) error { return f.EnsureVeth(cfg) }

// DeleteLink removes a link; a missing one is not an error.
func (f *Links) DeleteLink(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.Links, name)
	delete(f.Veths, name)
	delete(f.Bridges, name)
	delete(f.Gateways, name)
	return nil
}

// RetireLink keeps the link until Flush, like the kernel's reaper.
func (f *Links) RetireLink(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.Links[name]; ok {
		f.Retired = append(f.Retired, name)
	}
	return nil
}

// Flush deletes the retired links.
func (f *Links) Flush() {
	f.mu.Lock()
	retired := f.Retired
	f.Retired = nil
	f.mu.Unlock()
	for _, name := range retired {
		f.DeleteLink(name)
	}
}

// PurgeUnfinished flushes: fake links are never left half-built.
func (f *Links) PurgeUnfinished() error {
	f.Flush()
	return nil
}

// Link reports one link.
func (f *Links) Link(name string) (bridge.LinkInfo, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.Links[name]
	return l, ok, nil
}

// OwnedLinks lists the links whose alias starts with prefix.
func (f *Links) OwnedLinks(prefix string) ([]bridge.LinkInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []bridge.LinkInfo
	for _, l := range f.Links {
		if strings.HasPrefix(l.Alias, prefix) {
			out = append(out, l)
		}
	}
	return out, nil
}

// SetAlias changes a link's alias from `from` to `to`; another alias is
// refused, a missing link is success.
func (f *Links) SetAlias(name, from, to string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.Links[name]
	if !ok {
		return nil
	}
	if l.Alias != from {
		return fmt.Errorf("set alias of %q: %w", name, &netdev.NotOwnedError{Name: name, Kind: l.Kind, Alias: l.Alias})
	}
	l.Alias = to
	f.Links[name] = l
	return nil
}

// Inspect reads a link back: a bridge's or gateway link's addresses, a
// veth's peer (Peers, or as configured).
func (f *Links) Inspect(name string) (bridge.Found, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.Links[name]
	if !ok {
		return bridge.Found{}, false, nil
	}
	out := bridge.Found{LinkInfo: l}
	if b, ok := f.Bridges[name]; ok {
		out.Addrs = b.Addrs
	}
	if g, ok := f.Gateways[name]; ok {
		out.Addrs = g.Addrs
	}
	if v, ok := f.Veths[name]; ok {
		p := bridge.Peer{Name: v.PeerName, MAC: v.MAC}
		if set, ok := f.Peers[name]; ok {
			p = set
		}
		out.Peer = &p
	}
	return out, true, nil
}

// Routes lists HostRoutes and, as the kernel would, each bridge's and
// gateway link's connected routes.
func (f *Links) Routes() ([]bridge.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]bridge.Route(nil), f.HostRoutes...)
	for _, cfgs := range []map[string]bridge.BridgeConfig{f.Bridges, f.Gateways} {
		for name, cfg := range cfgs {
			for _, a := range cfg.Addrs {
				out = append(out, bridge.Route{Prefix: a.Masked(), Iface: name})
			}
		}
	}
	return out, nil
}

// EnableForwarding records the call.
func (f *Links) EnableForwarding(bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Forwarding = true
	return nil
}

// Names is the set of link names.
func (f *Links) Names() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]bool{}
	for n := range f.Links {
		out[n] = true
	}
	return out
}

// Snapshot renders every link, sorted, for before/after comparison.
func (f *Links) Snapshot() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range f.Links {
		out = append(out, fmt.Sprintf("%+v", l))
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// Firewall records the networks whose rules are installed and the published
// ports by endpoint, each with the identity of the state file it was
// installed for (Owner, as the real firewall's comments carry it).
type Firewall struct {
	mu    sync.Mutex
	Nets  map[string]firewall.Network
	Ports map[string]firewall.Ports
	// Owner is the identity new rules get (SetOwner).
	Owner string
	// FailEnsure and FailPorts, when set, are what EnsureNetwork and
	// EnsurePorts return.
	FailEnsure, FailPorts error
	Removed               []firewall.Ports // RemovePorts calls, in order
	Reconciles, JumpFixes int
}

// NewFirewall returns an empty rule set.
func NewFirewall() *Firewall {
	return &Firewall{Nets: map[string]firewall.Network{}, Ports: map[string]firewall.Ports{}}
}

// Lock and Unlock guard the fields while a test reads them under load.
func (f *Firewall) Lock()   { f.mu.Lock() }
func (f *Firewall) Unlock() { f.mu.Unlock() }

// EnsureNetwork installs a network's rules.
func (f *Firewall) EnsureNetwork(n firewall.Network) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.FailEnsure != nil {
		return f.FailEnsure
	}
	n.Owner = f.Owner
	f.Nets[n.ID] = n
	return nil
}

// RemoveNetwork drops a network's rules.
func (f *Firewall) RemoveNetwork(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.Nets, id)
	return nil
}

// EnsureJumps counts the calls.
func (f *Firewall) EnsureJumps() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.JumpFixes++
	return nil
}

// SetOwner sets the identity new rules carry.
func (f *Firewall) SetOwner(identity string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Owner = identity
}

// Reconcile installs nets and ports for Owner and drops the others owns
// says are the caller's.
func (f *Firewall) Reconcile(nets []firewall.Network, ports []firewall.Ports, owns func(firewall.OwnedRule) bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Reconciles++
	if f.Nets == nil {
		f.Nets = map[string]firewall.Network{}
	}
	if f.Ports == nil {
		f.Ports = map[string]firewall.Ports{}
	}
	// As the real firewall, owns is asked only of the rules not desired:
	// those of other ids, or of the desired ids under another owner.
	desired := map[string]bool{}
	for _, n := range nets {
		desired[n.ID] = true
	}
	for _, p := range ports {
		desired[p.EndpointID] = true
	}
	for id, n := range f.Nets {
		if !(desired[id] && n.Owner == f.Owner) && owns(firewall.OwnedRule{Owner: n.Owner, Network: id, Tag: firewall.Tag(n.Owner, id)}) {
			delete(f.Nets, id)
		}
	}
	for id, p := range f.Ports {
		if !(desired[id] && p.Owner == f.Owner) &&
			owns(firewall.OwnedRule{Owner: p.Owner, Network: p.NetworkID, Endpoint: id, Tag: firewall.PortTag(p.Owner, p.NetworkID, id)}) {
			delete(f.Ports, id)
		}
	}
	for _, n := range nets {
		n.Owner = f.Owner
		f.Nets[n.ID] = n
	}
	for _, p := range ports {
		p.Owner = f.Owner
		f.Ports[p.EndpointID] = p
	}
	return nil
}

// OwnedRules lists the rules the real firewall would hold, with their
// owners.
func (f *Firewall) OwnedRules() ([]firewall.OwnedRule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []firewall.OwnedRule
	for id, n := range f.Nets {
		for _, r := range firewall.Rules(n) {
			out = append(out, firewall.OwnedRule{Owner: n.Owner, Network: id, Tag: firewall.Tag(n.Owner, id), Line: r.Line()})
		}
	}
	for id, p := range f.Ports {
		for _, r := range firewall.PortRules(p) {
			out = append(out, firewall.OwnedRule{Owner: p.Owner, Network: p.NetworkID, Endpoint: id,
				Tag: firewall.PortTag(p.Owner, p.NetworkID, id), Line: r.Line()})
		}
	}
	return out, nil
}

// EnsurePorts installs an endpoint's port rules.
func (f *Firewall) EnsurePorts(p firewall.Ports) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.FailPorts != nil {
		return f.FailPorts
	}
	p.Owner = f.Owner
	f.Ports[p.EndpointID] = p
	return nil
}

// RemovePorts drops an endpoint's port rules.
func (f *Firewall) RemovePorts(p firewall.Ports) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.Ports, p.EndpointID)
	f.Removed = append(f.Removed, p)
	return nil
}

// Snapshot renders the rule set as JSON (maps sort their keys).
func (f *Firewall) Snapshot() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := json.Marshal(map[string]any{"nets": f.Nets, "ports": f.Ports})
	if err != nil {
		return "marshal: " + err.Error()
	}
	return string(b)
}
