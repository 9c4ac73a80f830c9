package testbed

import (
	"fmt"
	"sync"
	"testing"
)

// Underlay is the network between hosts: a bridge inside a namespace of its
// own, each attached host joined to it by a veth. It is deliberately not in
// the machine's namespace: there docker's FORWARD DROP policy plus
// br_netfilter would silently drop what crosses it.
//
// Addresses come from 203.0.113.0/24 (TEST-NET-3): the underlay namespace
// itself has .1 (where etcd can listen), hosts get .11, .12, ...
type Underlay struct {
	// IP is the underlay namespace's own address on the bridge.
	IP string

	ns   *NetNS
	mu   sync.Mutex
	next int
}

// UnderlayPrefixLen is the prefix length of underlay addresses.
const UnderlayPrefixLen = 24

// Link names inside the underlay namespace and in each host.
const (
	underlayBridge   = "br0"
	UnderlayHostLink = "ul0" // the host's underlay interface
)

// NewUnderlay makes the underlay namespace and its bridge; it is deleted
// when the test ends (make it before the hosts, so it outlives them).
func NewUnderlay(t testing.TB) *Underlay {
	t.Helper()
	u := &Underlay{IP: "203.0.113.1", ns: NewNetNS(t), next: 11}
	u.ns.Exec(t, "ip", "link", "add", underlayBridge, "type", "bridge")
	u.ns.Exec(t, "ip", "addr", "add", fmt.Sprintf("%s/%d", u.IP, UnderlayPrefixLen), "dev", underlayBridge)
	u.ns.Exec(t, "ip", "link", "set", underlayBridge, "up")
	return u
}

// NetNS is the underlay namespace (run etcd there with NetNS().Start).
func (u *Underlay) NetNS() *NetNS { return u.ns }

// Attach joins h to the underlay through UnderlayHostLink and returns h's
// underlay address.
func (u *Underlay) Attach(t testing.TB, h *Host) string {
	t.Helper()
	u.mu.Lock()
	n := u.next
	u.next++
	u.mu.Unlock()
	if n > 254 {
		t.Fatal("underlay: out of addresses")
	}
	port := fmt.Sprintf("ul%d", n) // the bridge port, in the underlay namespace
	Veth(t, h.ns, UnderlayHostLink, u.ns, port)
	u.ns.Exec(t, "ip", "link", "set", port, "master", underlayBridge)
	ip := fmt.Sprintf("203.0.113.%d", n)
	h.Exec(t, "ip", "addr", "add", fmt.Sprintf("%s/%d", ip, UnderlayPrefixLen), "dev", UnderlayHostLink)
	return ip
}
