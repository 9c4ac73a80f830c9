package bridge

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/internal/netdev"
)

// EnsureVeth creates the veth pair cfg describes, or converges the one
// vxbridge already owns under cfg.HostName: alias, MTU of the host end,
// enslaved to cfg.Bridge, port isolation, host end up. The peer end stays
// down for docker to move into the container, so it is only configured at
// creation (name, MAC, MTU). A host end that is not a veth carrying
// cfg.Alias is refused with a *netdev.NotOwnedError; a pair created by this
// call is deleted again if a later step fails.
func (m *Manager) EnsureVeth(cfg VethConfig) error {
	return m.withBridge(cfg, func(br netlink.Link) error { return m.convergeVeth(cfg, br) })
}

// AddVeth is EnsureVeth for a pair that most likely does not exist yet (a
// new endpoint, a new gateway link): it creates the pair in one request
// first, with no look-up, and only when a name is taken judges the existing
// link as EnsureVeth does. Only a pair it creates so honours
// cfg.PeerBuilding.
func (m *Manager) AddVeth(cfg VethConfig) error {
	return m.withBridge(cfg, func(br netlink.Link) error {
		err := m.createVeth(cfg, br.Attrs().Index)
		if err == nil {
			return m.finishVeth(cfg)
		}
		if !errors.Is(err, unix.EEXIST) {
			// One request: the kernel leaves nothing of a pair it could
			// not finish (a master it cannot set unregisters the link).
			return fmt.Errorf("create veth %q (peer %q) on bridge %q: %w", cfg.HostName, cfg.PeerName, cfg.Bridge, err)
		}
		// A name is taken: judge the existing link as EnsureVeth does.
		return m.convergeVeth(cfg, br)
	})
}

// withBridge validates cfg and runs fn with cfg's bridge, holding the lock
// of cfg's host end.
func (m *Manager) withBridge(cfg VethConfig, fn func(br netlink.Link) error) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	defer m.names.Lock(cfg.HostName)()
	br, found, err := m.nlh.Lookup(cfg.Bridge)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("veth %q: bridge %q does not exist", cfg.HostName, cfg.Bridge)
	}
	return fn(br)
}

// convergeVeth looks the host end up, creates the pair through the netlink
// package if it is missing, and converges it.
func (m *Manager) convergeVeth(cfg VethConfig, br netlink.Link) (retErr error) {
	want := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: cfg.HostName, MTU: cfg.MTU, MasterIndex: br.Attrs().Index, Flags: net.FlagUp,
			Group: netdev.BuildGroup},
		PeerName:         cfg.PeerName,
		PeerHardwareAddr: cfg.MAC,
		PeerMTU:          uint32(cfg.MTU),
	}
	if cfg.PeerNS != 0 {
		want.PeerNamespace = netlink.NsFd(cfg.PeerNS)
	}
	link, created, err := m.ensureLink(want, cfg.Alias)
	if err != nil {
		return err
	}
	if created {
		// Deleting the host end takes the peer with it.
		defer func() {
			if retErr != nil {
				m.deleteCreated(link)
			}
		}()
	}
	a := link.Attrs()
	port := cfg.port()
	if a.Alias == cfg.Alias {
		port.alias = ""
	}
	port.built = a.Group == netdev.BuildGroup
	return netdev.RunSteps(
		func() error { return m.nlh.SetMTU(link, cfg.MTU) },
		func() error { return m.nlh.SetMaster(link, br) },
		func() error { return m.nlh.SetUp(link) },
		func() error { return m.setupPort(cfg.HostName, port) },
	)
}

// finishVeth makes the pair createVeth just made a finished vxbridge port,
// or deletes it again.
func (m *Manager) finishVeth(cfg VethConfig) error {
	port := cfg.port()
	port.built = true
	err := m.setupPort(cfg.HostName, port)
	if err != nil {
		m.deleteCreated(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: cfg.HostName}})
	}
	return err
}

// port is the bridge-port part of cfg, alias included.
func (cfg VethConfig) port() portSettings {
	return portSettings{isolated: cfg.Isolated, hairpin: cfg.Hairpin, alias: cfg.Alias}
}

// setupPort must follow SetMaster: only a bridge port has the flags. The
// bridge forwards nothing between two isolated ports; frames to the bridge's
// own address (the gateway) and to non-isolated ports (an uplink) still
// pass. That is how icc=false keeps containers apart. Hairpin lets a
// container reach its own published port.
func (m *Manager) setupPort(name string, s portSettings) error {
	if err := m.finishPort(name, s); err != nil {
		return fmt.Errorf("set up bridge port %q (isolated=%t, hairpin=%t): %w", name, s.isolated, s.hairpin, err)
	}
	return nil
}
