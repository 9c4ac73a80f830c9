package testbed

import (
	"fmt"
	"path/filepath"
	"testing"
)

// Internet is a namespace standing for the outside world of one host: it is
// joined to the host's namespace by a veth pair, the host's default routes
// point at it, and it has a "remote server" address on its loopback. It has
// no route to container subnets, so a container's packet gets a reply only
// when the host masquerades it. All addresses are documentation ranges.
type Internet struct {
	// ServerIPv4 and ServerIPv6 are the remote server: ping these.
	ServerIPv4 string
	ServerIPv6 string
	// RouterIPv4/v6 are the internet side of the link (the host's gateway);
	// HostIPv4/v6 are the host side.
	RouterIPv4, RouterIPv6 string
	HostIPv4, HostIPv6     string

	ns   *NetNS
	host *Host
}

// Link names: per namespace, so they need not be unique on the machine.
const (
	internetHostLink = "inet0"   // in the host's namespace
	internetLink     = "uplink0" // in the internet namespace
)

// NewInternet makes the internet namespace for h. It is deleted when the
// test ends (taking the veth pair and h's default routes with it).
func NewInternet(t testing.TB, h *Host) *Internet {
	t.Helper()
	in := &Internet{
		ServerIPv4: "198.51.100.1", ServerIPv6: "2001:db8:100::1",
		RouterIPv4: "192.0.2.1", RouterIPv6: "2001:db8:2::1",
		HostIPv4: "192.0.2.2", HostIPv6: "2001:db8:2::2",
		host: h,
	}
	in.ns = NewNetNS(t)
	h.footprint.mu.Lock()
	h.footprint.NetNS = append(h.footprint.NetNS, in.ns)
	h.footprint.mu.Unlock()

	Veth(t, h.ns, internetHostLink, in.ns, internetLink)
	// nodad: a tentative address would make the first IPv6 packets vanish.
	in.ns.Exec(t, "ip", "addr", "add", in.RouterIPv4+"/24", "dev", internetLink)
	in.ns.Exec(t, "ip", "-6", "addr", "add", in.RouterIPv6+"/64", "dev", internetLink, "nodad")
	in.ns.Exec(t, "ip", "addr", "add", in.ServerIPv4+"/32", "dev", "lo")
	in.ns.Exec(t, "ip", "-6", "addr", "add", in.ServerIPv6+"/128", "dev", "lo")
	h.Exec(t, "ip", "addr", "add", in.HostIPv4+"/24", "dev", internetHostLink)
	h.Exec(t, "ip", "-6", "addr", "add", in.HostIPv6+"/64", "dev", internetHostLink, "nodad")
	h.Exec(t, "ip", "route", "replace", "default", "via", in.RouterIPv4)
	h.Exec(t, "ip", "-6", "route", "replace", "default", "via", in.RouterIPv6)
	return in
}

// NetNS is the internet namespace.
func (in *Internet) NetNS() *NetNS { return in.ns }

// Exec runs a command inside the internet namespace, failing the test on
// error.
func (in *Internet) Exec(t testing.TB, name string, args ...string) string {
	t.Helper()
	return in.ns.Exec(t, name, args...)
}

// Start runs a server inside the internet namespace (e.g. `busybox nc -l -p
// 8080`), output to the host's D/internet-NAME.log. It is stopped when the
// test ends.
func (in *Internet) Start(t testing.TB, name string, argv ...string) *Process {
	t.Helper()
	p := in.ns.Start(t, filepath.Join(in.host.dir, "internet-"+name+".log"), argv...)
	in.host.footprint.addProc(p.ident)
	return p
}

// String describes the internet for logs.
func (in *Internet) String() string {
	return fmt.Sprintf("internet %s (server %s, %s)", in.ns.Name, in.ServerIPv4, in.ServerIPv6)
}
