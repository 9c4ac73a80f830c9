package status

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// NotApplicable fills the cross-host sections of a single-host plugin.
const NotApplicable = "n/a (single-host)"

// WriteJSON writes r as indented JSON, for machines.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes r as readable tables: networks, endpoints, the cluster
// part, then a summary line that says whether anything is unhealthy.
func WriteTable(w io.Writer, r *Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format, args...) }
	p("vxbridge %s\tstate %s\tfirewall %s\n", r.Version, orDash(r.StateFile), firewallCell(r.Firewall))
	p("\nNETWORKS (%d)\n", len(r.Networks))
	if len(r.Networks) > 0 {
		p("ID\tBRIDGE\tSUBNETS\tMTU\tVNI\tENDPOINTS\tFLAGS\tHEALTH\n")
		for _, n := range r.Networks {
			p("%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", short(n.ID), n.Bridge, orDash(strings.Join(n.Subnets, ",")),
				mtuCell(n.MTU), vniCell(n.VNI), n.Endpoints, flags(n), n.Health)
		}
	}
	p("\nENDPOINTS (%d)\n", len(r.Endpoints))
	if len(r.Endpoints) > 0 {
		p("ID\tNETWORK\tVETH\tMAC\tIPV4\tIPV6\tJOINED\tHEALTH\n")
		for _, ep := range r.Endpoints {
			p("%s\t%s\t%s\t%s\t%s\t%s\t%t\t%s\n", short(ep.ID), short(ep.NetworkID), ep.HostVeth, ep.MAC,
				orDash(ep.IPv4), orDash(ep.IPv6), ep.Joined, ep.Health)
		}
	}
	writeCluster(p, r.Cluster)
	if probs := r.Problems(); len(probs) > 0 {
		p("\n%d PROBLEM(S):\n", len(probs))
		for _, pr := range probs {
			p("  %s\n", pr)
		}
	} else {
		p("\nall healthy\n")
	}
	return tw.Flush()
}

func writeCluster(p func(string, ...any), c *Cluster) {
	if c == nil {
		p("\nETCD\t%s\n", NotApplicable)
		p("VXLAN PEERS\t%s\n", NotApplicable)
		return
	}
	etcd := "connected"
	if !c.Etcd.Connected {
		etcd = "NOT CONNECTED: " + orDash(c.Etcd.Error)
	}
	p("\nETCD\t%s\t%s\n", strings.Join(c.Etcd.Endpoints, ","), etcd)
	p("VTEP\t%s\tfdb entries %d\tneighbour entries %d\n", orDash(c.VTEP), c.FDBEntries, c.NeighborEntries)
	p("\nVXLAN PEERS (%d)\n", len(c.Peers))
	if len(c.Peers) > 0 {
		p("HOST\tVTEP\tNETWORKS\tHEALTH\n")
		for _, peer := range c.Peers {
			p("%s\t%s\t%s\t%s\n", peer.Host, peer.VTEP, orDash(strings.Join(peer.Networks, ",")), peer.Health)
		}
	}
	if len(c.Conflicts) > 0 {
		p("\nREFUSED CLAIMS (%d)\n", len(c.Conflicts))
		p("VXLAN ID\tENDPOINT\tCLAIMS\tHELD BY\n")
		for _, x := range c.Conflicts {
			p("%s\t%s\t%s %s\t%s\n", x.Network, x.Endpoint, x.What, x.Value, x.HeldBy)
		}
	}
	if len(c.LostBlocks) > 0 {
		p("\nADDRESS BLOCKS LOST WHILE THE LEASE HAD LAPSED (%d)\n", len(c.LostBlocks))
		p("POOL\tBLOCK\tHELD BY\tTHIS HOST'S ADDRESSES IN IT\n")
		for _, x := range c.LostBlocks {
			p("%s\t%s\t%s\t%s\n", x.Pool, x.Block, x.HeldBy, strings.Join(x.Addresses, ","))
		}
	}
	if len(c.OldHosts) > 0 {
		p("\nOLD HOSTS (upgrade them)\t%s\n", strings.Join(c.OldHosts, ","))
	}
	writeNames(p, c)
}

func writeNames(p func(string, ...any), c *Cluster) {
	if len(c.HostAddrs) > 0 {
		p("\nTHIS HOST'S OWN ADDRESSES\nVXLAN ID\tMAC\tADDRESSES\n")
		for _, h := range c.HostAddrs {
			p("%s\t%s\t%s\n", h.Network, h.MAC, strings.Join(h.Addresses, ","))
		}
	}
	if c.DNS != nil {
		p("\nDNS\tport %d: %d answered, %d forwarded, %d failed, %d dropped\n",
			c.DNS.Port, c.DNS.Answered, c.DNS.Forwarded, c.DNS.Failed, c.DNS.Dropped)
	}
	if len(c.Names) > 0 {
		p("\nNAMES OF OTHER HOSTS (%d)\n", len(c.Names))
		p("VXLAN ID\tNAME\tADDRESSES\n")
		for _, n := range c.Names {
			p("%s\t%s\t%s\n", n.Network, n.Name, strings.Join(n.Addresses, ","))
		}
	}
}

func flags(n Network) string {
	var f []string
	if n.Internal {
		f = append(f, "internal")
	}
	if !n.ICC {
		f = append(f, "no-icc")
	}
	if n.NetNS != "" {
		f = append(f, "netns="+n.NetNS)
	}
	return orDash(strings.Join(f, ","))
}

func firewallCell(f Firewall) string {
	if f.Reason == "" {
		return orDash(f.Backend)
	}
	return f.Backend + " (" + f.Reason + ")"
}

func mtuCell(mtu int) string {
	if mtu == 0 {
		return "default"
	}
	return strconv.Itoa(mtu)
}

func vniCell(vni int) string {
	if vni == 0 {
		return "-"
	}
	return strconv.Itoa(vni)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
