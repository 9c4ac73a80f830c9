package doctor

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/ownership/mark"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/vxlan"
)

// forwardChain is vxbridge's chain that FORWARD jumps to.
const forwardChain = firewall.ChainForward

// guardJump is mangle FORWARD's jump to the docker guard, as iptables-save
// prints it.
const guardJump = "-A FORWARD -j " + firewall.ChainDockerGuard

// checkForward: vxbridge's bridges forward through the FORWARD ->
// VXBRIDGE-FORWARD jump and one rule per network tagged with its id. In
// docker's iptables mode the FORWARD policy is DROP (docker 28+ sets it
// only when it runs docker0 and turns forwarding on itself; 20.10 always),
// and the jump must sit right after DOCKER-USER, above DOCKER-FORWARD
// (docker 28+: DOCKER-CT, DOCKER-INTERNAL, DOCKER-BRIDGE) or 20.10's
// per-bridge ACCEPTs. Dockerd puts its rules back above that jump at each
// start; mangle FORWARD's jump to the docker guard keeps docker's
// containers out until the plugin moves it back, so it must be there too.
// In docker's nftables mode the jumps are in vxbridge's own table
// (nftablesForward).
func checkForward(f *Facts) Finding {
	if nftablesMode(f) {
		return nftablesForward(f)
	}
	c := Finding{Check: "forward"}
	if f.IPTablesErr != nil {
		c.Level, c.Message = Skip, fmt.Sprintf("iptables-save failed: %v", f.IPTablesErr)
		c.Fix = "run doctor as root, with the iptables package installed"
		return c
	}
	policy, jump, missing := forwardRules(f, f.IPTablesSave)
	nets := len(networks(f))
	switch {
	case nets == 0:
		c.Level, c.Message = OK, fmt.Sprintf("FORWARD policy %s; no vxbridge networks, so no rules expected", orUnknown(policy))
	case !jump:
		c.Level = Fail
		c.Message = fmt.Sprintf("FORWARD policy %s and no jump to %s: traffic of %d network(s) is not accepted", orUnknown(policy), forwardChain, nets)
		c.Fix = backendFix(f) + "the reconciler restores the jump within --reconcile-interval; if it stays missing, restart the plugin and read its log"
	case len(missing) > 0:
		c.Level = Fail
		c.Message = fmt.Sprintf("FORWARD policy %s; no %s rules for network(s) %s", orUnknown(policy), forwardChain, strings.Join(missing, ", "))
		c.Fix = backendFix(f) + "restart the plugin so its start-up reconcile re-creates them"
	case f.IPTablesMangleErr == nil && !slices.Contains(chainRules(f.IPTablesMangle, "FORWARD"), guardJump):
		c.Level = Fail
		c.Message = fmt.Sprintf("FORWARD policy %s; no jump to %s in mangle FORWARD: whenever docker's rules sit above the jump to %s (after each dockerd start, until the plugin moves it back), containers of docker's networks can open connections into vxbridge networks", orUnknown(policy), firewall.ChainDockerGuard, forwardChain)
		c.Fix = backendFix(f) + "the reconciler restores the jump within --reconcile-interval; if it stays missing, restart the plugin and read its log"
	case !firewall.ForwardJumpPlaced(chainRules(f.IPTablesSave, "FORWARD")):
		c.Level = Warn
		c.Message = fmt.Sprintf("FORWARD policy %s; a rule that may accept traffic (DOCKER-FORWARD, a docker network's ACCEPT) sits above the jump to %s: an ACCEPT there decides before vxbridge's rules (the jump to %s keeps docker's containers out meanwhile)", orUnknown(policy), forwardChain, firewall.ChainDockerGuard)
		c.Fix = "the plugin moves its jump back on the next firewall change or reconcile; if it stays, restart the plugin and read its log"
	default:
		c.Level, c.Message = OK, fmt.Sprintf("FORWARD policy %s; jump to %s after DOCKER-USER and rules for all %d network(s) present", orUnknown(policy), forwardChain, nets)
	}
	return c
}

// forwardRules reads a filter listing: FORWARD's policy, whether FORWARD
// jumps to VXBRIDGE-FORWARD, and the networks without a rule there.
func forwardRules(f *Facts, save string) (policy string, jump bool, missing []string) {
	policy, jump, tagged := parseForward(save)
	for _, n := range networks(f) {
		if !tagged[n.ID] {
			missing = append(missing, short(n.ID))
		}
	}
	return policy, jump, missing
}

// chainRules are the "-A chain" lines of an iptables-save listing.
func chainRules(save, chain string) []string {
	var out []string
	for _, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(line, "-A "+chain+" ") {
			out = append(out, line)
		}
	}
	return out
}

func nftablesMode(f *Facts) bool {
	return f.Report != nil && f.Report.Firewall.Backend == string(firewall.BackendNFTables)
}

// nftablesForward: in docker's nftables mode vxbridge's rules live in its
// own table (ip vxbridge), whose forward base chain jumps to
// VXBRIDGE-FORWARD; docker's chains have policy accept, but an iptables
// FORWARD policy DROP (docker's iptables mode left it, or the host's own
// firewall) drops what nftables accepts.
func nftablesForward(f *Facts) Finding {
	c := Finding{Check: "forward"}
	if f.NFTablesErr != nil {
		c.Level, c.Message = Skip, fmt.Sprintf("reading nftables table ip %s failed: %v", firewall.NFTTable, f.NFTablesErr)
		c.Fix = "run doctor as root in the plugin's network namespace"
		return c
	}
	_, jump, missing := forwardRules(f, f.NFTablesSave)
	policy := "ACCEPT"
	if f.IPTablesErr == nil {
		policy, _, _ = parseForward(f.IPTablesSave)
	}
	nets := len(networks(f))
	switch {
	case nets > 0 && policy == "DROP":
		c.Level = Fail
		c.Message = "nftables mode, but iptables' FORWARD policy is DROP: it drops what nftables accepts, vxbridge's and docker's traffic alike"
		c.Fix = "iptables -P FORWARD ACCEPT (and ip6tables), as docker's nftables documentation says; filter forwarding with nftables rules instead"
	case nets > 0 && !jump:
		c.Level = Fail
		c.Message = fmt.Sprintf("nftables mode; table ip %s has no jump to %s: %d network(s) unprotected", firewall.NFTTable, forwardChain, nets)
		c.Fix = "the plugin rewrites its table at the next nf_tables change or reconcile; if it stays, restart the plugin and read its log"
	case len(missing) > 0:
		c.Level = Fail
		c.Message = fmt.Sprintf("nftables mode; no %s rules in table ip %s for network(s) %s", forwardChain, firewall.NFTTable, strings.Join(missing, ", "))
		c.Fix = "restart the plugin so its start-up reconcile re-creates them"
	default:
		c.Level, c.Message = OK, fmt.Sprintf("nftables mode: table ip %s holds rules for all %d network(s); iptables FORWARD policy %s", firewall.NFTTable, nets, orUnknown(policy))
	}
	return c
}

func backendFix(f *Facts) string {
	if f.Report == nil {
		return ""
	}
	return fmt.Sprintf("check that the plugin's firewall backend (%s) is the one docker uses (iptables-legacy-save / iptables-nft-save show which holds DOCKER-USER, `nft list tables` shows docker-bridges in docker's nftables mode; set --iptables-backend or VXBRIDGE_IPTABLES_BACKEND); ",
		f.Report.Firewall.Backend)
}

// parseForward reads the filter table's iptables-save output: FORWARD's
// policy, whether FORWARD jumps to VXBRIDGE-FORWARD, and which network ids
// tag a rule in VXBRIDGE-FORWARD.
func parseForward(save string) (policy string, jump bool, tagged map[string]bool) {
	tagged = map[string]bool{}
	for _, line := range strings.Split(save, "\n") {
		switch {
		case strings.HasPrefix(line, ":FORWARD "):
			if f := strings.Fields(line); len(f) > 1 {
				policy = f[1]
			}
		case strings.HasPrefix(line, "-A FORWARD ") && strings.Contains(line, "-j "+forwardChain):
			jump = true
		case strings.HasPrefix(line, "-A "+forwardChain+" "):
			if r, ok := firewall.RuleOwner(line); ok && r.Endpoint == "" {
				tagged[r.Network] = true
			}
		}
	}
	return policy, jump, tagged
}

// checkBrNetfilter: with br_netfilter loaded, frames between two ports of
// one bridge go through iptables FORWARD too.
func checkBrNetfilter(f *Facts) Finding {
	c := Finding{Check: "br_netfilter"}
	switch strings.TrimSpace(f.BridgeNFCall) {
	case "":
		c.Level = OK
		c.Message = "br_netfilter not loaded: traffic inside a bridge is not filtered (icc=false still works through port isolation)"
	case "1":
		c.Level = OK
		c.Message = "br_netfilter loaded, bridge-nf-call-iptables=1: traffic inside a bridge of the host's namespace passes FORWARD, so the forward check above matters (cross-host networks in a namespace of their own are exempt)"
	default:
		c.Level = OK
		c.Message = "br_netfilter loaded, bridge-nf-call-iptables=0: traffic inside a bridge is not filtered"
	}
	return c
}

// checkMTU: a network whose MTU is above the underlay's gets its large
// packets dropped or fragmented on the way out; VXLAN needs vxlan.Overhead bytes more.
func checkMTU(f *Facts) Finding {
	c := Finding{Check: "mtu"}
	if f.UnderlayMTU == 0 {
		c.Level, c.Message = Skip, "no default route: underlay MTU unknown"
		return c
	}
	var bad []string
	for _, n := range networks(f) {
		mtu := n.MTU
		if mtu == 0 {
			mtu = 1500
		}
		limit, why := mtuLimit(f, n), ""
		if n.VNI != 0 {
			why = fmt.Sprintf(" - %d VXLAN", vxlan.Overhead)
		}
		if mtu > limit {
			bad = append(bad, fmt.Sprintf("%s (bridge %s) MTU %d > %d (%s %d%s)", short(n.ID), n.Bridge, mtu, limit, f.UnderlayIface, f.UnderlayMTU, why))
		}
	}
	if len(bad) > 0 {
		c.Level = Warn
		c.Message = strings.Join(bad, "; ")
		c.Fix = fmt.Sprintf("re-create the network with -o com.docker.network.driver.mtu=%d or less, or raise %s's MTU", minLimit(f), f.UnderlayIface)
		return c
	}
	c.Level = OK
	c.Message = fmt.Sprintf("every network's MTU fits the underlay (%s, MTU %d)", f.UnderlayIface, f.UnderlayMTU)
	return c
}

// mtuLimit is the largest MTU network n can have over the underlay.
func mtuLimit(f *Facts, n status.Network) int {
	if n.VNI != 0 {
		return f.UnderlayMTU - vxlan.Overhead
	}
	return f.UnderlayMTU
}

// minLimit is the largest MTU every network fits under.
func minLimit(f *Facts) int {
	limit := f.UnderlayMTU
	for _, n := range networks(f) {
		limit = min(limit, mtuLimit(f, n))
	}
	return limit
}

func checkEtcd(f *Facts) Finding {
	c := Finding{Check: "etcd"}
	if f.Report == nil {
		c.Level, c.Message = Skip, "no status from the plugin"
		return c
	}
	cl := f.Report.Cluster
	switch {
	case cl == nil:
		c.Level, c.Message = Skip, status.NotApplicable
	case cl.Etcd.Connected:
		c.Level, c.Message = OK, "connected to "+strings.Join(cl.Etcd.Endpoints, ",")
	default:
		c.Level = Fail
		c.Message = fmt.Sprintf("not connected to %s: %s", strings.Join(cl.Etcd.Endpoints, ","), cl.Etcd.Error)
		c.Fix = "check that etcd answers from this host (etcdctl --endpoints ... endpoint health), the TLS files and the firewall between them"
	}
	return c
}

// checkPeers: hosts of an older vxbridge this host cannot see, and records
// of other hosts refused for claiming what another holds.
func checkPeers(f *Facts) Finding {
	c := Finding{Check: "peers"}
	if f.Report == nil {
		c.Level, c.Message = Skip, "no status from the plugin"
		return c
	}
	cl := f.Report.Cluster
	switch {
	case cl == nil:
		c.Level, c.Message = Skip, status.NotApplicable
	case len(cl.OldHosts) > 0:
		c.Level = Fail
		c.Message = "hosts run a vxbridge from before records by network; their containers are unreachable from here: " + strings.Join(cl.OldHosts, ",")
		c.Fix = "upgrade vxbridge on those hosts (README, Multi-host: upgrading a running cluster)"
	case len(cl.LostBlocks) > 0:
		x := cl.LostBlocks[0]
		c.Level = Warn
		c.Message = fmt.Sprintf("%d address block(s) taken by other hosts while this host's lease had lapsed, e.g. %s of pool %s, held by %s; these addresses of this host's containers may be handed out twice: %s",
			len(cl.LostBlocks), x.Block, x.Pool, x.HeldBy, strings.Join(x.Addresses, ","))
		c.Fix = "restart the containers holding those addresses on this host (they get addresses of this host's blocks); keep this host's link to etcd shorter-lived than --host-ttl"
	case len(cl.Conflicts) > 0:
		x := cl.Conflicts[0]
		c.Level = Warn
		c.Message = fmt.Sprintf("%d refused claim(s), e.g. vxlan.id %s: %s claims %s %s held by %s", len(cl.Conflicts), x.Network, x.Endpoint, x.What, x.Value, x.HeldBy)
		c.Fix = "find the host that wrote the refused record (vxbridge status, REFUSED CLAIMS): a duplicated --ip, a cloned host id or a forged record"
	default:
		c.Level, c.Message = OK, fmt.Sprintf("%d peer host(s), no refused claims", len(cl.Peers))
	}
	return c
}

// checkNeighbours: past gc_thresh3 the kernel refuses new neighbour
// entries and containers lose connectivity at random. The limits are for
// the whole table, every namespace's entries, but permanent entries (what
// eager peer programming writes on the VXLAN devices) are not counted
// against them (Linux 4.19 and later): the containers' own ARP caches and,
// on demand, the entries of the peers talked to are.
func checkNeighbours(f *Facts) Finding {
	c := Finding{Check: "neighbours"}
	if f.GCThresh3 == 0 {
		c.Level, c.Message = Skip, "gc_thresh3 could not be read"
		return c
	}
	permanent, remote, onDemand := 0, 0, false
	if f.Report != nil && f.Report.Cluster != nil {
		cl := f.Report.Cluster
		remote, onDemand = cl.RemoteEndpoints, cl.Programming == status.ProgrammingOnDemand
		if !onDemand {
			permanent = cl.NeighborEntries
		}
	}
	counted := max(f.Neighbours-permanent, 0)
	msg := fmt.Sprintf("%d IPv4 neighbour entries counted against the limits (%d in the table, %d of them vxbridge's permanent peer entries), gc_thresh2 %d, gc_thresh3 %d",
		counted, f.Neighbours, permanent, f.GCThresh2, f.GCThresh3)
	want := 2 * f.GCThresh3
	switch {
	case counted >= f.GCThresh3*9/10:
		c.Level, c.Message = Fail, msg+": at the hard limit"
	case counted >= f.GCThresh2:
		c.Level, c.Message = Warn, msg+": above the soft limit, entries are being garbage-collected"
	case onDemand && remote > f.GCThresh3/2:
		c.Level = Warn
		c.Message = fmt.Sprintf("%s: peers are programmed on demand and its networks have %d remote endpoints, each taking a counted entry while talked to", msg, remote)
		want = max(want, 4*remote)
	case f.TableFulls > 0:
		c.Level, c.Message = Warn, fmt.Sprintf("%s: the kernel refused a new entry %d times since boot (neighbor table overflow)", msg, f.TableFulls)
	default:
		c.Level, c.Message = OK, msg
		return c
	}
	c.Fix = fmt.Sprintf("size the limits for twice the entries this host's containers (and, on demand, its peers) use at once: sysctl -w net.ipv4.neigh.default.gc_thresh3=%d net.ipv4.neigh.default.gc_thresh2=%d (and the same for net.ipv6; vxlan/ package notes)", want, want/2)
	return c
}

// checkLeftovers: interfaces carrying a vxbridge alias that no network or
// endpoint of the state file claims (a crash between steps, a deleted state
// file, a plugin that is not running to reconcile them).
func checkLeftovers(f *Facts) Finding {
	c := Finding{Check: "leftovers"}
	if f.Report == nil {
		c.Level, c.Message = Skip, "no status from the plugin to compare the interfaces with"
		return c
	}
	left := leftovers(f)
	if len(left) == 0 {
		c.Level, c.Message = OK, "every vxbridge interface belongs to a network or endpoint of the state file"
		return c
	}
	c.Level = Warn
	c.Message = "interfaces no network or endpoint claims: " + strings.Join(left, ", ")
	c.Fix = "the running plugin removes them within --reconcile-interval; otherwise: ip link delete NAME"
	return c
}

// leftovers are the links of the plugin's own state file (or of any, when
// it does not say which it is) that no record claims; another state file's
// are the ownership check's.
func leftovers(f *Facts) []string {
	claimed := map[mark.Owner]bool{}
	for _, n := range f.Report.Networks {
		claimed[mark.Owner{Kind: mark.Net, ID: n.ID}] = true
	}
	for _, ep := range f.Report.Endpoints {
		claimed[mark.Owner{Kind: mark.Endpoint, ID: ep.ID}] = true
	}
	var out []string
	for _, l := range f.Links {
		o, ok := mark.ParseAlias(l.Alias)
		// Only the kinds this host's records claim: other vxbridge links
		// (cross-host devices) are not judged here.
		if !ok || o.Kind != mark.Net && o.Kind != mark.Endpoint || !mine(f, o.Identity) {
			continue
		}
		if !claimed[mark.Owner{Kind: o.Kind, ID: o.ID}] {
			out = append(out, fmt.Sprintf("%s (%s, %s)", l.Name, l.Kind, l.Alias))
		}
	}
	sort.Strings(out)
	return out
}

// mine says whether an object carrying identity is the running plugin's
// state's: every object is, when it does not say which state it runs.
func mine(f *Facts, identity string) bool {
	o := f.Report.Ownership
	return o == nil || identity == o.Identity
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func short(id string) string { return id[:min(12, len(id))] }

// parseARPCache reads /proc/net/stat/arp_cache's text: a header of column
// names, then one row of hexadecimal counters per CPU.
func parseARPCache(text string) (entries, fulls int) {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) < 2 {
		return 0, 0
	}
	col := map[string]int{}
	for i, name := range strings.Fields(lines[0]) {
		col[name] = i
	}
	ei, eok := col["entries"]
	fi, fok := col["table_fulls"]
	for n, row := range lines[1:] {
		f := strings.Fields(row)
		if eok && n == 0 && ei < len(f) {
			v, _ := strconv.ParseInt(f[ei], 16, 64)
			entries = int(v)
		}
		if fok && fi < len(f) {
			v, _ := strconv.ParseInt(f[fi], 16, 64)
			fulls += int(v)
		}
	}
	return entries, fulls
}
