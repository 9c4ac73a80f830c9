// Package fakes holds in-memory kernel rooms (links, firewall) that satisfy
// driver.Links and driver.Firewall, for tests above the driver (plugin/,
// e2e helpers) that need a real driver and IPAM over a real store without
// root. They keep state only: no failure injection, no side effects.
package fakes

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/firewall"
)

// Links is an in-memory kernel: links by name.
type Links struct {
	mu    sync.Mutex
	links map[string]bridge.LinkInfo
}

// NewLinks returns an empty kernel.
func NewLinks() *Links { return &Links{links: map[string]bridge.LinkInfo{}} }

// EnsureBridge creates or adopts (same alias) a bridge.
func (f *Links) EnsureBridge(cfg bridge.BridgeConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.links[cfg.Name]; ok && l.Alias != cfg.Alias {
		return fmt.Errorf("interface %q: %w", cfg.Name, bridge.ErrNotOwned)
	}
	f.links[cfg.Name] = bridge.LinkInfo{Name: cfg.Name, Alias: cfg.Alias, Kind: "bridge", MTU: cfg.MTU}
	return nil
}

// DeleteBridge removes the bridge when alias matches.
func (f *Links) DeleteBridge(name, alias string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.links[name]; ok && l.Alias == alias {
		delete(f.links, name)
	}
	return nil
}

// EnsureVeth creates the host end of a veth on its bridge.
func (f *Links) EnsureVeth(cfg bridge.VethConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.links[cfg.HostName]; ok && l.Alias != cfg.Alias {
		return fmt.Errorf("interface %q: %w", cfg.HostName, bridge.ErrNotOwned)
	}
	if b, ok := f.links[cfg.Bridge]; !ok || b.Kind != "bridge" {
		return fmt.Errorf("bridge %q not found", cfg.Bridge)
	}
	f.links[cfg.HostName] = bridge.LinkInfo{Name: cfg.HostName, Alias: cfg.Alias, Kind: "veth", Master: cfg.Bridge, MTU: cfg.MTU}
	return nil
}

// DeleteLink removes a link; a missing one is not an error.
func (f *Links) DeleteLink(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.links, name)
	return nil
}

// RetireLink deletes at once: the fake has no kernel to batch for.
func (f *Links) RetireLink(name string) error { return f.DeleteLink(name) }

// Flush has nothing to wait for.
func (f *Links) Flush() {}

// PurgeUnfinished has nothing to purge: fake links are built at once.
func (f *Links) PurgeUnfinished() error { return nil }

// Link reports one link.
func (f *Links) Link(name string) (bridge.LinkInfo, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[name]
	return l, ok, nil
}

// OwnedLinks lists the links whose alias starts with prefix.
func (f *Links) OwnedLinks(prefix string) ([]bridge.LinkInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []bridge.LinkInfo
	for _, l := range f.links {
		if strings.HasPrefix(l.Alias, prefix) {
			out = append(out, l)
		}
	}
	return out, nil
}

// EnableForwarding does nothing.
func (f *Links) EnableForwarding(bool) error { return nil }

// Snapshot renders every link, sorted, for before/after comparison.
func (f *Links) Snapshot() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range f.links {
		out = append(out, fmt.Sprintf("%+v", l))
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// Firewall records the networks and published ports whose rules are in.
type Firewall struct {
	mu    sync.Mutex
	nets  map[string]firewall.Network
	ports map[string]firewall.Ports
}

// NewFirewall returns an empty rule set.
func NewFirewall() *Firewall {
	return &Firewall{nets: map[string]firewall.Network{}, ports: map[string]firewall.Ports{}}
}

// EnsureNetwork installs a network's rules.
func (f *Firewall) EnsureNetwork(n firewall.Network) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nets[n.ID] = n
	return nil
}

// RemoveNetwork drops a network's rules.
func (f *Firewall) RemoveNetwork(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.nets, id)
	return nil
}

// Reconcile replaces every rule.
func (f *Firewall) Reconcile(nets []firewall.Network, ports []firewall.Ports) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nets = map[string]firewall.Network{}
	for _, n := range nets {
		f.nets[n.ID] = n
	}
	f.ports = map[string]firewall.Ports{}
	for _, p := range ports {
		f.ports[p.EndpointID] = p
	}
	return nil
}

// EnsurePorts installs an endpoint's port rules.
func (f *Firewall) EnsurePorts(p firewall.Ports) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ports[p.EndpointID] = p
	return nil
}

// RemovePorts drops an endpoint's port rules.
func (f *Firewall) RemovePorts(p firewall.Ports) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ports, p.EndpointID)
	return nil
}

// EnsureJumps does nothing.
func (f *Firewall) EnsureJumps() error { return nil }

// Snapshot renders the rule set as JSON (maps sort their keys).
func (f *Firewall) Snapshot() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := json.Marshal(map[string]any{"nets": f.nets, "ports": f.ports})
	if err != nil {
		return "marshal: " + err.Error()
	}
	return string(b)
}
