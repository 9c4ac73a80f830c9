package bridge

import (
	"fmt"
	"net/netip"
)

// Route is a destination the host reaches through an interface: a route's
// (Local false), or one of the host's own addresses (Local true).
type Route struct {
	Prefix netip.Prefix
	Iface  string // "" when the kernel named none
	Local  bool
}

func (r Route) String() string {
	if r.Local {
		return fmt.Sprintf("address %s of %s", r.Prefix.Addr(), r.Iface)
	}
	return fmt.Sprintf("route %s via %s", r.Prefix, r.Iface)
}
