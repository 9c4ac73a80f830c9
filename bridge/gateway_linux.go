package bridge

import (
	"fmt"

	"github.com/vxbridge/vxbridge/internal/netdev"
)

// EnsureGateway converges the host end of a network's gateway link, the
// veth that joins the host's namespace to a network living in a namespace
// of its own: the other end is a port of the network's bridge there, and
// this end carries what the bridge carries for a network in the host's
// namespace (alias, MTU, exactly cfg.Addrs as global addresses, up). The
// host's routes, firewall rules and published ports then see it as the
// network's interface.
//
// It never creates: the pair is made from the network's namespace
// (EnsureVeth with PeerNS and PeerBuilding), so this end is born in
// netdev.BuildGroup without an alias. A veth called cfg.Name is vxbridge's
// when it carries cfg.Alias, or is half-built (no alias, BuildGroup); any
// other link is refused with a *netdev.NotOwnedError and left alone. A
// missing link is an error naming it: the caller makes the pair first.
func (m *Manager) EnsureGateway(cfg BridgeConfig) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("gateway link: %w", err)
	}
	defer m.names.Lock(cfg.Name)()
	link, found, err := m.nlh.Lookup(cfg.Name)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("gateway link %q does not exist", cfg.Name)
	}
	if err := netdev.CheckOwnedOrHalfBuilt(link, "veth", cfg.Alias); err != nil {
		return fmt.Errorf("gateway link: %w", err)
	}
	return m.setupGateway(link, cfg)
}

// DeleteGateway deletes the gateway link name (the pair goes with it) if
// vxbridge owns it under alias, as EnsureGateway judges; a missing link is
// success.
func (m *Manager) DeleteGateway(name, alias string) error {
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("delete gateway link: %w", err)
	}
	defer m.names.Lock(name)()
	link, found, err := m.nlh.Lookup(name)
	if err != nil || !found {
		return err
	}
	if err := netdev.CheckOwnedOrHalfBuilt(link, "veth", alias); err != nil {
		return fmt.Errorf("delete gateway link: %w", err)
	}
	return m.nlh.Delete(link)
}
