package doctor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/ownership/mark"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/store"
)

// GatherOptions say where the plugin is.
type GatherOptions struct {
	// Socket is the plugin's socket; "" finds it under status.PluginsDir.
	Socket string
	// StateDir and NetNSDir are the plugin's --state-dir and --netns-dir,
	// read when it does not answer.
	StateDir, NetNSDir string
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
	f.Neighbours, f.TableFulls = arpCacheStats()
	f.UnderlayIface, f.UnderlayMTU = defaultRouteLink()
	if f.Report == nil && o.StateDir != "" {
		f.State = gatherState(o.StateDir, o.NetNSDir)
	}
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			a := l.Attrs()
			f.Links = append(f.Links, Link{Name: a.Name, Alias: a.Alias, Kind: l.Type(), MTU: a.MTU})
		}
	}
	return f
}

// iptablesSave lists one table with the backend the plugin says it uses,
// so doctor looks where the plugin writes.
func iptablesSave(ctx context.Context, r *status.Report, table string) (string, error) {
	tool := "iptables-save"
	if r != nil {
		switch r.Firewall.Backend {
		case "legacy", "nft":
			tool = "iptables-" + r.Firewall.Backend + "-save"
		}
	}
	ctx, cancel := context.WithTimeout(ctx, saveTimeout)
	defer cancel()
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, "-t", table)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	cmd.WaitDelay = time.Second // a child still holding the pipes does not hold doctor
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("%s -t %s: timed out after %v (nf_tables hanging?)", tool, table, saveTimeout)
		}
		return "", fmt.Errorf("%s -t %s: %w: %s", tool, table, err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

// saveTimeout bounds doctor's iptables-save: a listing takes milliseconds,
// and doctor is what an operator runs when something hangs.
var saveTimeout = 10 * time.Second

func readSysctl(key string) string {
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// arpCacheStats reads the IPv4 neighbour table's entries (every
// namespace's) and its refusals for being full from /proc/net/stat/arp_cache:
// one row per CPU, the entries the same in each, the refusals per CPU.
func arpCacheStats() (entries, fulls int) {
	b, err := os.ReadFile("/proc/net/stat/arp_cache")
	if err != nil {
		return neighboursHere(), 0
	}
	return parseARPCache(string(b))
}

// neighboursHere counts this namespace's entries, where /proc/net/stat is
// not readable.
func neighboursHere() int {
	neigh, err := netlink.NeighList(0, unix.AF_INET)
	if err != nil {
		return 0
	}
	return len(neigh)
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

// gatherState reads the state file in dir (without a plugin holding it)
// and the names of the namespaces in netnsDir.
func gatherState(dir, netnsDir string) *StateFacts {
	st := &StateFacts{Path: filepath.Join(dir, store.FileName)}
	st.Info, st.Err = store.Inspect(st.Path)
	if errors.Is(st.Err, fs.ErrNotExist) {
		st.Err, st.Missing = nil, true
	}
	if netnsDir == "" {
		return st
	}
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return st
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), mark.NetNSPrefix) {
			st.NetNS = append(st.NetNS, e.Name())
		}
	}
	return st
}
