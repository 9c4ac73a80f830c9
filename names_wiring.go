package main

import (
	"errors"
	"log/slog"
	"net/netip"

	"github.com/vxbridge/vxbridge/names"
	"github.com/vxbridge/vxbridge/namespace"
	"github.com/vxbridge/vxbridge/peers"
)

// crossHostNames is the names part of cross-host networks: the learner of
// joined containers' names and the DNS server answering them.
type crossHostNames struct {
	port    int
	learner *names.Learner
	server  *names.Server
	ct      *names.Conntrack
}

// startNames opens the DNS server on port (IPv4, and IPv6 where the host
// has it) and the conntrack socket it finds upstreams with; port 0 is off.
// The learner finds containers' sandboxes in mount namespace sandboxes
// (nil: the process's own).
func startNames(port int, pm *peers.Manager, sandboxes *namespace.MountNS, log *slog.Logger) (_ *crossHostNames, retErr error) {
	if port == 0 {
		return nil, nil
	}
	ct, err := names.OpenConntrack()
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			ct.Close()
		}
	}()
	v4 := netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(port))
	cfg := names.ServerConfig{Addrs: []netip.AddrPort{v4, netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(port))},
		Directory: names.FromPeers(pm), OrigDst: ct, Logger: log}
	srv, err := names.Listen(cfg)
	if v6err := err; err != nil { // a host without IPv6: IPv4 alone
		cfg.Addrs = cfg.Addrs[:1]
		if srv, err = names.Listen(cfg); err == nil {
			log.Warn("names: DNS server on IPv4 only", "port", port, "err", v6err)
		}
	}
	if err != nil {
		return nil, errors.Join(err, errors.New("choose another --names-port, or 0 to answer no names across hosts"))
	}
	log.Info("names of other hosts' containers answered", "port", port)
	return &crossHostNames{port: port, learner: names.NewLearner(names.SandboxOpener(sandboxes), log), server: srv, ct: ct}, nil
}

func (n *crossHostNames) close() {
	if n != nil {
		n.learner.Close()
		n.ct.Close()
	}
}
