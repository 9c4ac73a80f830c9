package store

import (
	"fmt"
	"net/netip"
)

// PortMapping is one published port as vxbridge programmed it: traffic for
// HostIP:HostPort reaches ContainerIP:ContainerPort. An unspecified HostIP
// (0.0.0.0 or ::) stands for every address of the host in its family.
// HostIP and ContainerIP may be of different families: an IPv6 host port of
// a container without IPv6 is served by vxbridge's proxy alone.
type PortMapping struct {
	Proto         string     `json:"proto"` // "tcp", "udp" or "sctp"
	HostIP        netip.Addr `json:"host_ip"`
	HostPort      uint16     `json:"host_port"`
	ContainerIP   netip.Addr `json:"container_ip"`
	ContainerPort uint16     `json:"container_port"`
}

// String reads like docker ps: 0.0.0.0:8080->80/tcp, [::]:8080->80/tcp.
func (m PortMapping) String() string {
	return fmt.Sprintf("%s->%d/%s", netip.AddrPortFrom(m.HostIP, m.HostPort), m.ContainerPort, m.Proto)
}
