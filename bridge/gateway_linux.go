package bridge

import (
	"fmt"

	"github.com/vishvananda/netlink"
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
// BuildGroup without an alias. A veth called cfg.Name is vxbridge's when it
// carries cfg.Alias, or no alias and BuildGroup; any other link is refused
// with a *NotOwnedError and left alone. A missing link is an error naming
// it: the caller makes the pair first.
func (m *Manager) EnsureGateway(cfg BridgeConfig) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("gateway link: %w", err)
	}
	defer m.names.Lock(cfg.Name)()
	link, found, err := m.linkByName(cfg.Name)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("gateway link %q does not exist", cfg.Name)
	}
	if err := gatewayOwned(link, cfg.Alias); err != nil {
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
	link, found, err := m.linkByName(name)
	if err != nil || !found {
		return err
	}
	if err := gatewayOwned(link, alias); err != nil {
		return fmt.Errorf("delete gateway link: %w", err)
	}
	return m.linkDel(link)
}

// gatewayOwned accepts a veth carrying alias, or a half-built one (no
// alias, BuildGroup): what EnsureVeth with PeerBuilding leaves.
func gatewayOwned(link netlink.Link, alias string) error {
	a := link.Attrs()
	if link.Type() == "veth" && a.Alias == "" && a.Group == BuildGroup {
		return nil
	}
	return checkOwned(a.Name, link.Type(), a.Alias, "veth", alias)
}
