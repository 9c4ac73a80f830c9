package doctor

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/status"
)

// GatherOptions say where the plugin is.
type GatherOptions struct {
	// Socket is the plugin's socket; "" finds it under status.PluginsDir.
	Socket string
}

// Gather reads the facts of the calling process's host: its network
// namespace, /proc/sys, iptables and the plugin's status. Nothing here
// changes anything.
func Gather(ctx context.Context, o GatherOptions) *Facts {
	f := &Facts{Socket: o.Socket}
	if o.Socket == "" {
		f.Socket, f.Report, f.ReportErr = status.Find(ctx, status.PluginsDir)
	} else {
		f.Report, f.ReportErr = status.Fetch(ctx, o.Socket)
	}
	f.IPTablesSave, f.IPTablesErr = iptablesSave(ctx, f.Report, "filter")
	if f.Report != nil && f.Report.Firewall.Backend == string(firewall.BackendNFTables) {
		f.NFTablesSave, f.NFTablesErr = firewall.NFTablesSave("filter")
	} else {
		f.IPTablesMangle, f.IPTablesMangleErr = iptablesSave(ctx, f.Report, "mangle")
	}
	f.IPForward = readSysctl("net/ipv4/ip_forward")
	f.BridgeNFCall = readSysctl("net/bridge/bridge-nf-call-iptables")
	f.GCThresh2, _ = strconv.Atoi(readSysctl("net/ipv4/neigh/default/gc_thresh2"))
	f.GCThresh3, _ = strconv.Atoi(readSysctl("net/ipv4/neigh/default/gc_thresh3"))
	if neigh, err := netlink.NeighList(0, unix.AF_INET); err == nil {
		f.Neighbours = len(neigh)
	}
	f.UnderlayIface, f.UnderlayMTU = defaultRouteLink()
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			a := l.Attrs()
			f.Links = append(f.Links, Link{Name: a.Name, Alias: a.Alias, Kind: l.Type(), MTU: a.MTU})
		}
	}
	return f
}

// iptablesSaveTimeout bounds one listing, so a hung iptables-save cannot
// hang doctor; thousands of rules print in well under a second.
const iptablesSaveTimeout = 20 * time.Second

// iptablesSave lists one table with the backend the plugin says it uses,
// so doctor looks where the plugin writes.
func iptablesSave(ctx context.Context, r *status.Report, table string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, iptablesSaveTimeout)
	defer cancel()
	tool := "iptables-save"
	if r != nil {
		switch r.Firewall.Backend {
		case "legacy", "nft":
			tool = "iptables-" + r.Firewall.Backend + "-save"
		}
	}
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, "-t", table)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s -t %s: %w: %s", tool, table, err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

func readSysctl(key string) string {
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// defaultRouteLink is the interface of the IPv4 default route and its MTU.
func defaultRouteLink() (string, int) {
	routes, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", 0
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP != nil && !r.Dst.IP.IsUnspecified() {
			continue
		}
		if ones, _ := maskOnes(r); ones != 0 {
			continue
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		return l.Attrs().Name, l.Attrs().MTU
	}
	return "", 0
}

func maskOnes(r netlink.Route) (int, int) {
	if r.Dst == nil {
		return 0, 32
	}
	return r.Dst.Mask.Size()
}
