package names

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// Conntrack finds a redirected flow's original destination in the kernel's
// connection tracking table of the namespace it was opened in (the
// host's, where the firewall redirects). One lookup is one netlink request
// by the flow's reply tuple; UDP has no SO_ORIGINAL_DST, so TCP takes the
// same path.
type Conntrack struct{ c *conntrack.Conn }

// OpenConntrack opens a conntrack netlink socket in the calling thread's
// network namespace.
func OpenConntrack() (*Conntrack, error) {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("names: open conntrack: %w", err)
	}
	return &Conntrack{c: c}, nil
}

// Close closes the socket.
func (ct *Conntrack) Close() error { return ct.c.Close() }

var errNotRedirected = errors.New("the flow was not redirected to the server")

// OrigDst implements OrigDst.
func (ct *Conntrack) OrigDst(proto string, local, remote netip.AddrPort) (netip.AddrPort, error) {
	p := uint8(unix.IPPROTO_UDP)
	if proto == "tcp" {
		p = unix.IPPROTO_TCP
	}
	f, err := ct.c.Get(conntrack.Flow{TupleReply: conntrack.Tuple{
		IP:    conntrack.IPTuple{SourceAddress: local.Addr(), DestinationAddress: remote.Addr()},
		Proto: conntrack.ProtoTuple{Protocol: p, SourcePort: local.Port(), DestinationPort: remote.Port()},
	}})
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("conntrack lookup of %s %s -> %s: %w", proto, remote, local, err)
	}
	orig := netip.AddrPortFrom(f.TupleOrig.IP.DestinationAddress.Unmap(), f.TupleOrig.Proto.DestinationPort)
	if orig == local || !orig.IsValid() {
		return netip.AddrPort{}, errNotRedirected
	}
	return orig, nil
}
