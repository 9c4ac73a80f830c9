// Package doctor checks what commonly breaks a vxbridge host and says how to
// fix it. Facts are gathered once (facts_linux.go: sysctls, iptables, links,
// neighbours, the plugin's status); every check is a pure function of them
// returning a Finding, so each is tested without root.
package doctor

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/vxbridge/vxbridge/status"
)

// Level grades a finding.
type Level string

const (
	OK   Level = "ok"
	Warn Level = "warn"
	Fail Level = "FAIL"
	Skip Level = "skip"
)

// Finding is one check's verdict and, when not ok, how to fix it.
type Finding struct {
	Check   string `json:"check"`
	Level   Level  `json:"level"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// Link is an interface as the checks need it.
type Link struct {
	Name  string
	Alias string
	Kind  string
	MTU   int
}

// Facts is everything the checks look at. A zero or empty field with its
// Err set means it could not be read.
type Facts struct {
	Socket    string
	Report    *status.Report
	ReportErr error

	// IPTablesSave is `iptables-save -t filter` of the plugin's backend
	// (of the iptables in PATH in nftables mode, for FORWARD's policy).
	IPTablesSave string
	IPTablesErr  error
	// IPTablesMangle is `iptables-save -t mangle` of the plugin's backend,
	// read in iptables mode only: it holds the docker guard's jump.
	IPTablesMangle    string
	IPTablesMangleErr error
	// NFTablesSave is vxbridge's nftables filter chains (ip vxbridge) in
	// iptables-save's form, read in docker's nftables mode only.
	NFTablesSave string
	NFTablesErr  error

	IPForward string // /proc/sys/net/ipv4/ip_forward
	// BridgeNFCall is /proc/sys/net/bridge/bridge-nf-call-iptables, "" when
	// br_netfilter is not loaded.
	BridgeNFCall string

	// UnderlayIface and UnderlayMTU describe the default route's interface.
	UnderlayIface string
	UnderlayMTU   int

	Links []Link

	// State is the state file read from disk, for when no plugin answers
	// (ownership.go); nil when not gathered.
	State *StateFacts

	// Neighbours counts IPv4 neighbour entries of every namespace (the
	// kernel's limits are for the whole table), permanent ones too;
	// TableFulls is how often since boot the kernel refused a new entry
	// because the table was full; GCThresh2/3 are its soft and hard limits.
	Neighbours int
	TableFulls int
	GCThresh2  int
	GCThresh3  int
}

// Checks is every check, in the order they are shown.
var Checks = []func(*Facts) Finding{
	checkPlugin,
	checkHealth,
	checkIPForward,
	checkForward,
	checkBrNetfilter,
	checkMTU,
	checkEtcd,
	checkPeers,
	checkNeighbours,
	checkLeftovers,
	checkOwnership,
}

// Run runs every check.
func Run(f *Facts) []Finding {
	out := make([]Finding, 0, len(Checks))
	for _, c := range Checks {
		out = append(out, c(f))
	}
	return out
}

// Failed says whether any finding is a failure.
func Failed(fs []Finding) bool {
	for _, f := range fs {
		if f.Level == Fail {
			return true
		}
	}
	return false
}

// Write prints the findings as a table, each fix on its own line below.
func Write(w io.Writer, fs []Finding) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range fs {
		fmt.Fprintf(tw, "[%s]\t%s\t%s\n", f.Level, f.Check, f.Message)
		if f.Fix != "" {
			fmt.Fprintf(tw, "\t\tfix: %s\n", f.Fix)
		}
	}
	return tw.Flush()
}

func networks(f *Facts) []status.Network {
	if f.Report == nil {
		return nil
	}
	return f.Report.Networks
}

func checkPlugin(f *Facts) Finding {
	c := Finding{Check: "plugin"}
	if f.ReportErr != nil {
		c.Level, c.Message = Fail, fmt.Sprintf("no answer from a running vxbridge: %v", f.ReportErr)
		c.Fix = "start it (docker plugin enable vxbridge:TAG, or systemctl start vxbridge), or give --socket PATH"
		return c
	}
	c.Level = OK
	c.Message = fmt.Sprintf("vxbridge %s answers on %s (%d networks, %d endpoints)",
		f.Report.Version, f.Socket, len(f.Report.Networks), len(f.Report.Endpoints))
	return c
}

func checkHealth(f *Facts) Finding {
	c := Finding{Check: "state"}
	if f.Report == nil {
		c.Level, c.Message = Skip, "no status from the plugin"
		return c
	}
	probs := f.Report.Problems()
	if len(probs) == 0 {
		c.Level, c.Message = OK, "every bridge and veth in the state file exists and is in place"
		return c
	}
	c.Level, c.Message = Warn, strings.Join(probs, "; ")
	c.Fix = "the reconciler repairs this within --reconcile-interval; if it persists, read the plugin's log (docker plugin inspect / journalctl -u vxbridge)"
	return c
}

func checkIPForward(f *Facts) Finding {
	c := Finding{Check: "ip_forward"}
	switch strings.TrimSpace(f.IPForward) {
	case "1":
		c.Level, c.Message = OK, "net.ipv4.ip_forward=1"
	case "":
		c.Level, c.Message = Skip, "net.ipv4.ip_forward could not be read"
	default:
		c.Level, c.Message = Fail, "net.ipv4.ip_forward=0: containers cannot reach beyond their bridge"
		c.Fix = "sysctl -w net.ipv4.ip_forward=1 (and set it in /etc/sysctl.d/ to survive reboots)"
	}
	return c
}
