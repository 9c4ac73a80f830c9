package firewall

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// WatchChanges calls changed whenever an nf_tables rule, chain or table of
// the calling thread's network namespace changes, until ctx ends: that is
// every iptables-nft change, whoever makes it (dockerd rewriting its chains
// at start, an operator's `iptables -F`, vxbridge itself). iptables-legacy
// changes raise no event; there only the periodic reconcile sees them.
// changed runs on the watching goroutine: it must not block.
func WatchChanges(ctx context.Context, changed func()) error {
	s, err := nl.Subscribe(unix.NETLINK_NETFILTER, unix.NFNLGRP_NFTABLES)
	if err != nil {
		return fmt.Errorf("subscribe to nf_tables events: %w", err)
	}
	go func() {
		<-ctx.Done()
		s.Close() // ends Receive
	}()
	for {
		msgs, _, err := s.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, unix.ENOBUFS) {
			changed() // events were lost: something changed
			continue
		}
		if err != nil {
			return fmt.Errorf("receive nf_tables events: %w", err)
		}
		if len(msgs) > 0 {
			changed()
		}
	}
}
