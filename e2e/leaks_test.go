package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/ownership/mark"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/store"
	"github.com/vxbridge/vxbridge/vxlan"
)

// dockerNet is the part of `docker network inspect` the leak check reads.
type dockerNet struct {
	ID   string `json:"Id"`
	Name string `json:"Name"`
	IPAM struct {
		Driver string             `json:"Driver"`
		Config []dockerIPAMConfig `json:"Config"`
	} `json:"IPAM"`
	Containers map[string]struct {
		Name       string `json:"Name"`
		EndpointID string `json:"EndpointID"`
	} `json:"Containers"`
}

// dockerIPAMConfig is one subnet of a network in `docker network inspect`.
type dockerIPAMConfig struct {
	Subnet             string            `json:"Subnet"`
	AuxiliaryAddresses map[string]string `json:"AuxiliaryAddresses"`
}

// leakView is what docker, the plugin and the kernel each hold, gathered
// once so every rule of the check compares the same snapshot.
type leakView struct {
	driver     string               // the name docker knows the plugin by (a managed one's carries its tag)
	dockerNets map[string]dockerNet // by network id
	dockerEps  map[string]string    // endpoint id -> network id
	report     *status.Report
	pluginEps  map[string]status.Endpoint
	pluginNets map[string]status.Network
	links      map[string]string // name -> `ip -d -o link` line; "<netns>/<name>" in the plugin's namespaces
	netns      []string          // the plugin's network namespaces (files in its --netns-dir)
	fwLines    []string          // iptables-save and ip6tables-save lines
	pools      []store.Pool
	addrs      map[string]map[netip.Addr]store.AddressKind // pool id -> taken
}

// leaks is LEAKS(): everything vxbridge holds on host h that belongs to
// nothing docker knows, and everything docker uses that vxbridge lost. An
// empty list is a pass. The plugin must be running (its view comes from POST
// /VxBridge.Status; the IPAM part from a copy of its bbolt file, which the
// running plugin keeps locked): call it when docker is quiet.
//
// Rules: (1) every vxbridge network and endpoint docker knows is in the
// plugin's records and vice versa; (2) the plugin reports no unhealthy
// bridge or veth; (3) every link with a vxbridge alias, or named vxb-*,
// belongs to a recorded network, endpoint, VXLAN device or gateway link of a
// live network, in the host's namespace and in the plugin's own ones;
// (4) every iptables rule tagged vxbridge:ID names a live network (and, for
// port rules, a live endpoint); (5) every IPAM pool is the subnet of a live
// network using the vxbridge IPAM, and every endpoint address it marks taken
// is held by a live endpoint; every static (--ip) address is held by a live
// endpoint; every aux address is an --aux-address of the live network using
// the pool (or, in a record from before static addresses had their own
// kind, a live endpoint's address); (6) every namespace under the plugin's
// --netns-dir is the one of a live network.
//
// Cross-host FDB and neighbour entries need every host's view: see
// crossHostLeaks.
func leaks(t testing.TB, h *testbed.Host) []string {
	t.Helper()
	return leaksAt(t, h, unmanagedPlugin(h))
}

// pluginPlace is where LEAKS() reaches a host's plugin: its socket, its
// state directory and the driver name docker knows it by.
type pluginPlace struct{ socket, stateDir, driver string }

// unmanagedPlugin is the place of the plugin testbed's StartPlugin runs.
func unmanagedPlugin(h *testbed.Host) pluginPlace {
	return pluginPlace{socket: h.PluginSocket(), stateDir: h.PluginStateDir(), driver: testbed.PluginName}
}

// leaksAt is leaks of the plugin at p (a managed plugin, say).
func leaksAt(t testing.TB, h *testbed.Host, p pluginPlace) []string {
	t.Helper()
	v, err := gatherLeakView(h, p)
	if err != nil {
		return []string{"leak check could not run: " + err.Error()}
	}
	return v.findings()
}

// requireNoLeaks fails the test with every finding of leaks, polled for up
// to within (the plugin's reconciler may still be converging).
func requireNoLeaks(t testing.TB, h *testbed.Host, within time.Duration) {
	t.Helper()
	requireNoLeaksAt(t, h, unmanagedPlugin(h), within)
}

// requireNoLeaksAt is requireNoLeaks of the plugin at p.
func requireNoLeaksAt(t testing.TB, h *testbed.Host, p pluginPlace, within time.Duration) {
	t.Helper()
	var last []string
	err := testbed.Poll(within, func() error {
		last = leaksAt(t, h, p)
		if len(last) > 0 {
			return fmt.Errorf("%d leak(s)", len(last))
		}
		return nil
	})
	if err != nil {
		t.Errorf("%s: LEAKS() not empty after %v:\n  %s", h.Name, within, strings.Join(last, "\n  "))
	}
}

func gatherLeakView(h *testbed.Host, p pluginPlace) (*leakView, error) {
	v := &leakView{driver: p.driver, dockerNets: map[string]dockerNet{}, dockerEps: map[string]string{},
		pluginEps: map[string]status.Endpoint{}, pluginNets: map[string]status.Network{},
		links: map[string]string{}, addrs: map[string]map[netip.Addr]store.AddressKind{}}

	out, err := h.Docker("network", "ls", "--no-trunc", "--filter", "driver="+p.driver, "--format", "{{.ID}}")
	if err != nil {
		return nil, fmt.Errorf("docker network ls: %v: %s", err, out)
	}
	if ids := strings.Fields(out); len(ids) > 0 {
		out, err := h.Docker(append([]string{"network", "inspect"}, ids...)...)
		if err != nil {
			return nil, fmt.Errorf("docker network inspect: %v: %s", err, out)
		}
		var nets []dockerNet
		if err := json.Unmarshal([]byte(out), &nets); err != nil {
			return nil, fmt.Errorf("decode docker network inspect: %v", err)
		}
		for _, n := range nets {
			v.dockerNets[n.ID] = n
			for _, c := range n.Containers {
				v.dockerEps[c.EndpointID] = n.ID
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if v.report, err = status.Fetch(ctx, p.socket); err != nil {
		return nil, fmt.Errorf("plugin status: %v", err)
	}
	for _, n := range v.report.Networks {
		v.pluginNets[n.ID] = n
	}
	for _, ep := range v.report.Endpoints {
		v.pluginEps[ep.ID] = ep
	}

	out, err = h.TryExec("ip", "-d", "-o", "link", "show")
	if err != nil {
		return nil, fmt.Errorf("ip link: %v: %s", err, out)
	}
	addLinks(v.links, "", out)
	names, err := h.PluginNamespaces()
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		out, err := execIn(h, name, "ip", "-d", "-o", "link", "show")
		if err != nil {
			v.netns = append(v.netns, name+" (no namespace on the file: "+strings.TrimSpace(out)+")")
			continue
		}
		v.netns = append(v.netns, name)
		addLinks(v.links, name+"/", out)
	}

	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := h.TryExec(tool)
		if err != nil {
			return nil, fmt.Errorf("%s: %v: %s", tool, err, out)
		}
		v.fwLines = append(v.fwLines, strings.Split(out, "\n")...)
	}

	if err := v.readIPAM(p.stateDir); err != nil {
		return nil, err
	}
	return v, nil
}

// addLinks adds the links of `ip -d -o link show` output to links, by
// prefix and name.
func addLinks(links map[string]string, prefix, out string) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.SplitN(line, ": ", 3)
		if len(f) < 3 {
			continue
		}
		name, _, _ := strings.Cut(f[1], "@")
		links[prefix+name] = line
	}
}

// readIPAM reads pools and addresses from a copy of the plugin's bbolt file
// (bbolt commits are atomic on disk, so a copy taken while docker is quiet
// is a consistent snapshot; the original stays locked by the plugin).
func (v *leakView) readIPAM(stateDir string) error {
	src, err := os.Open(filepath.Join(stateDir, store.FileName))
	if err != nil {
		return fmt.Errorf("open state file: %v", err)
	}
	defer src.Close()
	dir, err := os.MkdirTemp("", "vxleaks-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	dst, err := os.Create(filepath.Join(dir, store.FileName))
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("copy state file: %v", err)
	}
	if err := dst.Close(); err != nil {
		return err
	}
	db, err := store.Open(dir, store.Options{})
	if err != nil {
		return fmt.Errorf("open copy of the state file: %v", err)
	}
	defer db.Close()
	if v.pools, err = db.Pools(); err != nil {
		return err
	}
	for _, p := range v.pools {
		a, err := db.Addresses(p.ID)
		if err != nil {
			return err
		}
		v.addrs[p.ID] = a
	}
	return nil
}

func shortID(id string) string { return id[:min(12, len(id))] }

func (v *leakView) findings() []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }

	// (1) records vs docker.
	for id := range v.pluginNets {
		if _, ok := v.dockerNets[id]; !ok {
			add("network record %s: docker has no such vxbridge network", shortID(id))
		}
	}
	for id, n := range v.dockerNets {
		if _, ok := v.pluginNets[id]; !ok {
			add("docker network %s (%s): the plugin has no record of it", n.Name, shortID(id))
		}
	}
	for id, ep := range v.pluginEps {
		if _, ok := v.dockerEps[id]; !ok {
			add("endpoint record %s (veth %s, %s): no live docker endpoint", shortID(id), ep.HostVeth, ep.IPv4)
		}
	}
	for id, netID := range v.dockerEps {
		if _, ok := v.pluginEps[id]; !ok {
			add("docker endpoint %s on network %s: the plugin has no record of it", shortID(id), shortID(netID))
		}
	}
	// (2) the plugin's own health checks of bridges and veths.
	for _, p := range v.report.Problems() {
		if !strings.HasPrefix(p, "etcd") && !strings.HasPrefix(p, "peer") {
			add("plugin reports: %s", p)
		}
	}
	// (3) links.
	for name, line := range v.links {
		alias := linkAlias(line)
		o, marked := mark.ParseAlias(alias)
		switch {
		case marked && o.Kind == mark.Net && !v.liveNet(o.ID):
			add("bridge %s (alias %s): no live network", name, alias)
		case marked && o.Kind == mark.VXLAN && !v.liveNet(o.ID):
			add("VXLAN device %s (alias %s): no live network", name, alias)
		case marked && o.Kind == mark.Endpoint && !v.liveEndpoint(o.ID):
			add("veth %s (alias %s): no live endpoint", name, alias)
		case marked && o.Kind == mark.Gateway && !v.liveNet(o.ID):
			add("gateway link %s (alias %s): no live network", name, alias)
		case marked || strings.HasPrefix(alias, mark.Prefix):
			// Live, or another owned link (a VTEP and the like), checked by
			// its own scenarios: it is per host, not per network.
		case strings.HasPrefix(name, "vxb-"):
			add("link %s is named like a vxbridge bridge but has no vxbridge alias: %s", name, strings.TrimSpace(line))
		}
	}
	// (6) network namespaces: each is the one of a live network.
	ownNS := map[string]bool{}
	for id, n := range v.pluginNets {
		if n.NetNS != "" && v.liveNet(id) {
			ownNS[n.NetNS] = true
		}
	}
	for _, name := range v.netns {
		if !ownNS[name] {
			add("network namespace %s: no live network has it", name)
		}
	}
	// (4) firewall rules.
	for _, line := range v.fwLines {
		tag, ok := ruleTag(line)
		if !ok {
			continue
		}
		netID, epID, isPort := strings.Cut(tag, ":")
		switch {
		case !v.liveNet(netID):
			add("iptables rule for network %s (gone): %s", shortID(netID), line)
		case isPort && !v.liveEndpoint(epID):
			add("iptables port rule for endpoint %s (gone): %s", shortID(epID), line)
		}
	}
	// (5) IPAM.
	held := map[netip.Addr]bool{}
	for _, a := range hostAddrsOf(v.report) { // the host's own address of a cross-host network
		held[a.Addr()] = true
	}
	for _, ep := range v.pluginEps {
		for _, s := range []string{ep.IPv4, ep.IPv6} {
			if p, err := netip.ParsePrefix(s); err == nil {
				held[p.Addr()] = true
			} else if a, err := netip.ParseAddr(s); err == nil {
				held[a] = true
			}
		}
	}
	subnets := map[string]bool{}
	auxOf := map[string]map[netip.Addr]bool{} // subnet -> its live --aux-address values
	for _, n := range v.dockerNets {
		if n.IPAM.Driver != v.driver {
			continue
		}
		for _, c := range n.IPAM.Config {
			p, err := netip.ParsePrefix(c.Subnet)
			if err != nil {
				continue
			}
			k := p.Masked().String()
			subnets[k] = true
			for _, s := range c.AuxiliaryAddresses {
				if a, err := netip.ParseAddr(s); err == nil {
					if auxOf[k] == nil {
						auxOf[k] = map[netip.Addr]bool{}
					}
					auxOf[k][a] = true
				}
			}
		}
	}
	for _, p := range v.pools {
		k := p.Prefix.Masked().String()
		if !subnets[k] {
			add("IPAM pool %s (%s): no live network uses it", p.Prefix, p.ID)
		}
		var taken []string
		for a, kind := range v.addrs[p.ID] {
			switch kind {
			case store.KindEndpoint:
				if !held[a] {
					taken = append(taken, fmt.Sprintf("IPAM address %s of pool %s is taken but no endpoint holds it", a, p.Prefix))
				}
			case store.KindStatic:
				if !held[a] {
					taken = append(taken, fmt.Sprintf("IPAM static (--ip) address %s of pool %s is taken but no endpoint holds it", a, p.Prefix))
				}
			case store.KindAux:
				if !auxOf[k][a] && !held[a] {
					taken = append(taken, fmt.Sprintf("IPAM aux address %s of pool %s is reserved but no live network has it as --aux-address and no endpoint holds it", a, p.Prefix))
				}
			case store.KindGateway:
			default:
				taken = append(taken, fmt.Sprintf("IPAM address %s of pool %s has an unknown kind %q", a, p.Prefix, kind))
			}
		}
		sort.Strings(taken)
		out = append(out, taken...)
	}
	sort.Strings(out)
	return out
}

// liveNet: docker knows the network and the plugin has its record.
func (v *leakView) liveNet(id string) bool {
	_, d := v.dockerNets[id]
	_, p := v.pluginNets[id]
	return d && p
}

// liveEndpoint: docker knows the endpoint and the plugin has its record.
func (v *leakView) liveEndpoint(id string) bool {
	_, d := v.dockerEps[id]
	_, p := v.pluginEps[id]
	return d && p
}

// linkAlias is the alias of an `ip -d -o link show` line ("" if none).
func linkAlias(line string) string {
	i := strings.Index(line, " alias ")
	if i < 0 {
		return ""
	}
	rest := line[i+len(" alias "):]
	if j := strings.IndexAny(rest, " \\"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// ruleTag is the id a vxbridge rule is tagged with (--comment
// "vxbridge:[IDENTITY:]ID"): a network's, or "NETWORK:ENDPOINT".
func ruleTag(line string) (string, bool) {
	r, ok := firewall.RuleOwner(line)
	if !ok {
		return "", false
	}
	if r.Endpoint != "" {
		return r.Network + ":" + r.Endpoint, true
	}
	return r.Network, true
}

func TestLeakParsers(t *testing.T) {
	line := `12: vxh1234@if11: <BROADCAST> mtu 1500 master vxb-1 state UP mode DEFAULT group default qlen 1000\    link/ether 02:42 brd ff:ff:ff:ff:ff:ff link-netnsid 0 promiscuity 1 \    alias vxbridge:ep:abcd \    veth`
	if got := linkAlias(line); got != "vxbridge:ep:abcd" {
		t.Errorf("linkAlias = %q", got)
	}
	if got := linkAlias("3: eth0: <UP> mtu 1500"); got != "" {
		t.Errorf("linkAlias without alias = %q", got)
	}
	for _, c := range []string{"vxbridge:net1:ep2", "vxbridge:0123456789ab:net1:ep2"} {
		tag, ok := ruleTag(`-A VXBRIDGE-FORWARD -o vxb-1 -m comment --comment "` + c + `" -j ACCEPT`)
		if !ok || tag != "net1:ep2" {
			t.Errorf("ruleTag(%s) = %q %v", c, tag, ok)
		}
	}
	if _, ok := ruleTag(`-A FORWARD -j DOCKER-USER`); ok {
		t.Error("ruleTag found a tag in an untagged rule")
	}
	// A record docker forgot, a veth of nothing and a stray pool are found;
	// a consistent view is clean.
	v := &leakView{
		driver:     testbed.PluginName,
		dockerNets: map[string]dockerNet{"n1": {ID: "n1", Name: "a"}},
		dockerEps:  map[string]string{"e1": "n1"},
		report:     &status.Report{},
		pluginNets: map[string]status.Network{"n1": {ID: "n1", Health: status.Healthy()}},
		pluginEps: map[string]status.Endpoint{"e1": {ID: "e1", IPv4: "10.0.0.2/24", Health: status.Healthy()},
			"e2": {ID: "e2", HostVeth: "vxh2", Health: status.Healthy()}},
		links: map[string]string{"vxh9": "9: vxh9@if8: <UP> alias vxbridge:ep:e9 \\ veth"},
		pools: []store.Pool{{ID: "p1", Prefix: netip.MustParsePrefix("10.9.0.0/24")}},
		addrs: map[string]map[netip.Addr]store.AddressKind{"p1": {netip.MustParseAddr("10.9.0.7"): store.KindEndpoint,
			netip.MustParseAddr("10.9.0.8"): store.KindStatic, netip.MustParseAddr("10.9.0.9"): store.KindAux}},
	}
	got := strings.Join(v.findings(), "\n")
	for _, want := range []string{"endpoint record e2", "veth vxh9", "IPAM pool 10.9.0.0/24", "IPAM address 10.9.0.7",
		"IPAM static (--ip) address 10.9.0.8", "IPAM aux address 10.9.0.9"} {
		if !strings.Contains(got, want) {
			t.Errorf("findings miss %q:\n%s", want, got)
		}
	}
	delete(v.pluginEps, "e2")
	v.links, v.pools, v.addrs = nil, nil, nil
	if f := v.findings(); len(f) > 0 {
		t.Errorf("consistent view has findings: %v", f)
	}

	// Static and aux addresses: held by a live endpoint, or a live
	// --aux-address of the pool's network, pass; the same addresses with
	// the endpoint gone or the aux address not the network's are found.
	n := v.dockerNets["n1"]
	n.IPAM.Driver = testbed.PluginName
	n.IPAM.Config = append(n.IPAM.Config, dockerIPAMConfig{Subnet: "10.0.0.0/24", AuxiliaryAddresses: map[string]string{"r": "10.0.0.9"}})
	v.dockerNets["n1"] = n
	v.pools = []store.Pool{{ID: "p1", Prefix: netip.MustParsePrefix("10.0.0.0/24")}}
	v.addrs = map[string]map[netip.Addr]store.AddressKind{"p1": {
		netip.MustParseAddr("10.0.0.1"): store.KindGateway,
		netip.MustParseAddr("10.0.0.2"): store.KindStatic, // e1's
		netip.MustParseAddr("10.0.0.9"): store.KindAux,    // the network's --aux-address
	}}
	if f := v.findings(); len(f) > 0 {
		t.Errorf("consistent view with static and aux addresses has findings: %v", f)
	}
	v.addrs["p1"][netip.MustParseAddr("10.0.0.2")] = store.KindAux // an old record of e1's --ip
	if f := v.findings(); len(f) > 0 {
		t.Errorf("old aux record of a live endpoint's --ip has findings: %v", f)
	}
	v.addrs["p1"][netip.MustParseAddr("10.0.0.2")] = store.KindStatic
	v.addrs["p1"][netip.MustParseAddr("10.0.0.10")] = store.KindAux
	delete(v.pluginEps, "e1")
	delete(v.dockerEps, "e1")
	got = strings.Join(v.findings(), "\n")
	for _, want := range []string{"IPAM static (--ip) address 10.0.0.2 of pool 10.0.0.0/24", "IPAM aux address 10.0.0.10 of pool 10.0.0.0/24"} {
		if !strings.Contains(got, want) {
			t.Errorf("findings miss %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "10.0.0.9") {
		t.Errorf("a live --aux-address was reported:\n%s", got)
	}
}

// Cross-host part of LEAKS(): the FDB and neighbour entries of every
// vxbridge VXLAN device (vxv-*) against the live endpoints of the other
// hosts. It needs every host of the cluster, so it is separate from leaks.

// xhostEndpoint is a live endpoint of a cross-host network on one host.
type xhostEndpoint struct {
	host, id string
	vni      int
	mac      string
	ips      []netip.Addr
}

// vxlanTable is what one VXLAN device holds: static FDB entries with a
// remote destination (MAC -> VTEP) and permanent neighbours (IP -> MAC).
type vxlanTable struct {
	vni   int
	fdb   map[string]string
	neigh map[string]string
}

// xhostView is one host's share of the cross-host check.
type xhostView struct {
	host string
	vtep string // the plugin's VTEP address ("" on a single-host plugin)
	eps  []xhostEndpoint
	devs map[string]vxlanTable // by device name
}

// crossHostLeaks is the FDB/neighbour rule of LEAKS() over hosts, which
// must be every host of the cluster (each plugin running): every FDB entry
// with a remote destination and every permanent neighbour entry on a vxv-*
// device must belong to an endpoint that is live (in docker and in the
// plugin's records) on another host's network with the device's VNI, with
// that host's VTEP and the endpoint's MAC; and every such endpoint must
// have its entries. Empty is a pass.
func crossHostLeaks(t testing.TB, hosts []*testbed.Host) []string {
	t.Helper()
	return crossHostLeaksAt(t, hosts, unmanagedPlugin)
}

// crossHostLeaksAt is crossHostLeaks of the plugins at place(host).
func crossHostLeaksAt(t testing.TB, hosts []*testbed.Host, place func(*testbed.Host) pluginPlace) []string {
	t.Helper()
	var views []xhostView
	var out []string
	for _, h := range hosts {
		v, err := gatherXHostView(h, place(h))
		if err != nil {
			out = append(out, fmt.Sprintf("%s: cross-host leak check could not run: %v", h.Name, err))
			continue
		}
		views = append(views, v)
	}
	if len(out) > 0 {
		return out
	}
	return crossHostFindings(views)
}

// requireNoCrossHostLeaks fails the test with every finding of
// crossHostLeaks, polled for up to within (peers publish through etcd and
// reconcile on a timer).
func requireNoCrossHostLeaks(t testing.TB, hosts []*testbed.Host, within time.Duration) {
	t.Helper()
	requireNoCrossHostLeaksAt(t, hosts, unmanagedPlugin, within)
}

// requireNoCrossHostLeaksAt is requireNoCrossHostLeaks of the plugins at
// place(host).
func requireNoCrossHostLeaksAt(t testing.TB, hosts []*testbed.Host, place func(*testbed.Host) pluginPlace, within time.Duration) {
	t.Helper()
	var last []string
	err := testbed.Poll(within, func() error {
		last = crossHostLeaksAt(t, hosts, place)
		if len(last) > 0 {
			return fmt.Errorf("%d leak(s)", len(last))
		}
		return nil
	})
	if err != nil {
		t.Errorf("cross-host LEAKS() not empty after %v:\n  %s", within, strings.Join(last, "\n  "))
	}
}

func gatherXHostView(h *testbed.Host, p pluginPlace) (xhostView, error) {
	x := xhostView{host: h.Name, devs: map[string]vxlanTable{}}
	v, err := gatherLeakView(h, p)
	if err != nil {
		return x, err
	}
	if c := v.report.Cluster; c != nil {
		x.vtep = c.VTEP
	}
	for id, ep := range v.pluginEps {
		n, ok := v.pluginNets[ep.NetworkID]
		if !ok || n.VNI == 0 || !v.liveEndpoint(id) {
			continue
		}
		e := xhostEndpoint{host: h.Name, id: id, vni: n.VNI, mac: ep.MAC}
		for _, s := range []string{ep.IPv4, ep.IPv6} {
			if p, err := netip.ParsePrefix(s); err == nil {
				e.ips = append(e.ips, p.Addr())
			}
		}
		x.eps = append(x.eps, e)
	}
	x.eps = append(x.eps, hostRecords(h.Name, v.report)...)
	for key, line := range v.links {
		ns, name, inNS := strings.Cut(key, "/")
		if !inNS {
			ns, name = "", key
		}
		if !strings.HasPrefix(name, vxlan.DevicePrefix) {
			continue
		}
		tab := vxlanTable{vni: vxlanID(line), fdb: map[string]string{}, neigh: map[string]string{}}
		out, err := execIn(h, ns, "bridge", "fdb", "show", "dev", name)
		if err != nil {
			return x, fmt.Errorf("bridge fdb show dev %s: %v: %s", name, err, out)
		}
		for mac, dst := range parseFDB(out) {
			tab.fdb[mac] = dst
		}
		out, err = execIn(h, ns, "ip", "neigh", "show", "dev", name)
		if err != nil {
			return x, fmt.Errorf("ip neigh show dev %s: %v: %s", name, err, out)
		}
		tab.neigh = parseNeigh(out)
		x.devs[name] = tab
	}
	return x, nil
}

// vxlanID is the VNI of an `ip -d -o link show` line of a VXLAN device (0
// if none).
func vxlanID(line string) int {
	f := strings.Fields(line)
	for i := 0; i+2 < len(f); i++ {
		if f[i] == "vxlan" && f[i+1] == "id" {
			n := 0
			fmt.Sscan(f[i+2], &n)
			return n
		}
	}
	return 0
}

// parseFDB keeps the `bridge fdb show dev X` entries with a remote
// destination ("MAC dst ADDR self permanent"): the ones vxbridge writes.
// Entries the bridge learned on the port have no dst.
func parseFDB(out string) map[string]string {
	fdb := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == "dst" {
			fdb[strings.ToLower(f[0])] = f[2]
		}
	}
	return fdb
}

// parseNeigh keeps the permanent entries of `ip neigh show dev X`.
func parseNeigh(out string) map[string]string {
	neigh := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == "lladdr" && strings.Contains(line, "PERMANENT") {
			if a, err := netip.ParseAddr(f[0]); err == nil {
				neigh[a.String()] = strings.ToLower(f[2])
			}
		}
	}
	return neigh
}

// crossHostFindings is the pure part of crossHostLeaks.
func crossHostFindings(views []xhostView) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	for _, h := range views {
		for dev, tab := range h.devs {
			// Every live endpoint of the VNI on every other host.
			wantFDB, wantNeigh := map[string]string{}, map[string]string{}
			owner := map[string]string{} // MAC or IP -> "host endpoint"
			for _, g := range views {
				if g.host == h.host {
					continue
				}
				for _, ep := range g.eps {
					if ep.vni != tab.vni {
						continue
					}
					if g.vtep == "" {
						add("%s: endpoint %s on VNI %d has no VTEP in its plugin's status", g.host, shortID(ep.id), ep.vni)
						continue
					}
					mac := strings.ToLower(ep.mac)
					wantFDB[mac] = g.vtep
					owner[mac] = g.host + " endpoint " + shortID(ep.id)
					for _, ip := range ep.ips {
						wantNeigh[ip.String()] = mac
						owner[ip.String()] = owner[mac]
					}
				}
			}
			for mac, dst := range tab.fdb {
				switch want, ok := wantFDB[mac]; {
				case !ok:
					add("%s: %s FDB entry %s dst %s: no live endpoint on another host has this MAC", h.host, dev, mac, dst)
				case want != dst:
					add("%s: %s FDB entry %s dst %s: %s is at VTEP %s", h.host, dev, mac, dst, owner[mac], want)
				}
			}
			for mac, dst := range wantFDB {
				if _, ok := tab.fdb[mac]; !ok {
					add("%s: %s has no FDB entry for %s (%s, VTEP %s)", h.host, dev, mac, owner[mac], dst)
				}
			}
			for ip, mac := range tab.neigh {
				switch want, ok := wantNeigh[ip]; {
				case !ok:
					add("%s: %s neighbour entry %s lladdr %s: no live endpoint on another host has this address", h.host, dev, ip, mac)
				case want != mac:
					add("%s: %s neighbour entry %s lladdr %s: %s has MAC %s", h.host, dev, ip, mac, owner[ip], want)
				}
			}
			for ip, mac := range wantNeigh {
				if _, ok := tab.neigh[ip]; !ok {
					add("%s: %s has no neighbour entry for %s (%s, MAC %s)", h.host, dev, ip, owner[ip], mac)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func TestCrossHostLeakFindings(t *testing.T) {
	a := netip.MustParseAddr
	views := []xhostView{
		{host: "h1", vtep: "192.0.2.1",
			eps: []xhostEndpoint{{host: "h1", id: "e1", vni: 90, mac: "02:00:00:00:00:01", ips: []netip.Addr{a("10.90.0.2")}}},
			devs: map[string]vxlanTable{"vxv-5a": {vni: 90,
				fdb:   map[string]string{"02:00:00:00:00:02": "192.0.2.2"},
				neigh: map[string]string{"10.90.0.3": "02:00:00:00:00:02", "fd90::3": "02:00:00:00:00:02"}}}},
		{host: "h2", vtep: "192.0.2.2",
			eps: []xhostEndpoint{{host: "h2", id: "e2", vni: 90, mac: "02:00:00:00:00:02", ips: []netip.Addr{a("10.90.0.3"), a("fd90::3")}},
				{host: "h2", id: "e9", vni: 91, mac: "02:00:00:00:00:09", ips: []netip.Addr{a("10.91.0.9")}}}, // a VNI h1 has no device for
			devs: map[string]vxlanTable{"vxv-5a": {vni: 90,
				fdb:   map[string]string{"02:00:00:00:00:01": "192.0.2.1"},
				neigh: map[string]string{"10.90.0.2": "02:00:00:00:00:01"}}}},
	}
	if f := crossHostFindings(views); len(f) > 0 {
		t.Fatalf("consistent tables have findings:\n%s", strings.Join(f, "\n"))
	}
	// A stale entry of each kind, a wrong destination, a missing entry.
	views[0].devs["vxv-5a"].fdb["02:00:00:00:00:77"] = "192.0.2.7"
	views[0].devs["vxv-5a"].neigh["10.90.0.77"] = "02:00:00:00:00:77"
	views[1].devs["vxv-5a"].fdb["02:00:00:00:00:01"] = "192.0.2.9"
	delete(views[1].devs["vxv-5a"].neigh, "10.90.0.2")
	got := strings.Join(crossHostFindings(views), "\n")
	for _, want := range []string{
		"h1: vxv-5a FDB entry 02:00:00:00:00:77 dst 192.0.2.7: no live endpoint",
		"h1: vxv-5a neighbour entry 10.90.0.77 lladdr 02:00:00:00:00:77: no live endpoint",
		"h2: vxv-5a FDB entry 02:00:00:00:00:01 dst 192.0.2.9: h1 endpoint e1 is at VTEP 192.0.2.1",
		"h2: vxv-5a has no neighbour entry for 10.90.0.2 (h1 endpoint e1",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("findings miss %q:\n%s", want, got)
		}
	}
	fdb := parseFDB("02:00:00:00:00:02 dst 192.0.2.2 self permanent\n02:42:ac:11:00:02 master vxb-1 \n33:33:00:00:00:01 self permanent\n")
	if len(fdb) != 1 || fdb["02:00:00:00:00:02"] != "192.0.2.2" {
		t.Errorf("parseFDB = %v", fdb)
	}
	neigh := parseNeigh("10.90.0.3 lladdr 02:00:00:00:00:02 PERMANENT\nfd90::3 lladdr 02:00:00:00:00:02 PERMANENT\n10.90.0.4 lladdr 02:00:00:00:00:04 STALE\n")
	if len(neigh) != 2 || neigh["fd90::3"] != "02:00:00:00:00:02" {
		t.Errorf("parseNeigh = %v", neigh)
	}
	if n := vxlanID(`7: vxv-5a: <BROADCAST> mtu 1450 master vxb-1 \    link/ether 02:42 brd ff:ff:ff:ff:ff:ff promiscuity 1 \    vxlan id 90 local 192.0.2.1 dev ul0 srcport 0 0 dstport 4789 nolearning proxy`); n != 90 {
		t.Errorf("vxlanID = %d", n)
	}
}

// crossHostLeakCheck (a TestMultiHost scenario) runs the FDB/neighbour rule
// of LEAKS() on the live cluster, then proves it can fail: a stale FDB and
// neighbour entry injected by hand on one host and a real FDB entry deleted
// on another must be reported, and the plugins' reconcilers must repair
// both (measured).
func (m *multiHost) crossHostLeakCheck(t *testing.T) {
	requireNoCrossHostLeaks(t, m.hosts, 30*time.Second)
	for _, h := range m.hosts {
		requireNoLeaks(t, h, 10*time.Second)
	}
	h1, h2 := m.hosts[0], m.hosts[1]
	dev := vxlan.DeviceName(xVNI)
	const staleMAC, staleIP, staleDst = "02:00:5e:10:99:99", "10.90.0.250", "192.0.2.99"
	victim := m.cs[0] // h1's container: h2 has an FDB entry for it
	want := []string{
		fmt.Sprintf("%s: %s FDB entry %s dst %s: no live endpoint", h1.Name, dev, staleMAC, staleDst),
		fmt.Sprintf("%s: %s neighbour entry %s lladdr %s: no live endpoint", h1.Name, dev, staleIP, staleMAC),
		fmt.Sprintf("%s: %s has no FDB entry for %s", h2.Name, dev, victim.mac),
	}
	// The reconcilers (every 2 s here, each host on its own phase) may
	// repair an entry before the check reads it (the check takes about a
	// second): then inject again. Each finding must be reported in some
	// attempt; an entry still in the kernel but not reported fails at once.
	seen := map[string]bool{}
	for attempt := 1; ; attempt++ {
		mustXExec(t, h1, "bridge", "fdb", "replace", staleMAC, "dev", dev, "dst", staleDst, "self", "permanent")
		mustXExec(t, h1, "ip", "neigh", "replace", staleIP, "lladdr", staleMAC, "dev", dev, "nud", "permanent")
		// On a retry the entry deleted last time may not be back yet (the
		// reconciler restores it on its next run): absent is what we want.
		if out, err := xExec(h2, "bridge", "fdb", "del", victim.mac, "dev", dev, "self"); err != nil && !strings.Contains(out, "No such file or directory") {
			t.Fatalf("%s: bridge fdb del %s dev %s self: %v: %s", h2.Name, victim.mac, dev, err, out)
		}
		injected := time.Now()
		found := crossHostLeaks(t, m.hosts)
		got := strings.Join(found, "\n")
		fdb1, neigh1 := tables(t, h1)
		fdb2, _ := tables(t, h2)
		stillThere := []bool{fdb1[staleMAC] == staleDst, neigh1[staleIP] == staleMAC, fdb2[victim.mac] == ""}
		var missed, repaired []string
		for i, w := range want {
			switch {
			case strings.Contains(got, w):
				seen[w] = true
			case stillThere[i]:
				missed = append(missed, w) // in the kernel, not reported: the check is wrong
			case !seen[w]:
				repaired = append(repaired, w) // a reconciler was faster than the check
			}
		}
		if len(missed) > 0 {
			t.Fatalf("attempt %d: LEAKS() missed %q though the kernel still has it; it found:\n  %s", attempt, missed, strings.Join(found, "\n  "))
		}
		if len(repaired) == 0 {
			t.Logf("every injected entry reported (by attempt %d; this check took %v):\n  %s", attempt, time.Since(injected).Round(time.Millisecond), strings.Join(want, "\n  "))
			break
		}
		if attempt == 10 {
			t.Fatalf("10 attempts: the reconcilers always repaired %q before the check read it", repaired)
		}
		t.Logf("attempt %d: not yet seen, repaired by a reconciler before the check read it: %q; injecting again", attempt, repaired)
	}
	// The plugins put it right: the stale entries go, the deleted one comes back.
	start := time.Now()
	requireNoCrossHostLeaks(t, m.hosts, 30*time.Second)
	t.Logf("reconcilers removed the injected entries and restored the deleted one in %v", time.Since(start).Round(time.Millisecond))
	waitPing(t, h2, "c2", victim.ip4)
}

// teardownLeaks (the last TestMultiHost scenario) removes every container
// of every host while etcd still runs (the test's cleanups stop etcd
// before they remove containers, and with etcd down no peer can learn of a
// removal), then requires LEAKS() empty on every host, cross-host part
// included: no FDB or neighbour entry outlives its endpoint.
func (m *multiHost) teardownLeaks(t *testing.T) {
	start := time.Now()
	for _, h := range m.hosts {
		if ids := strings.Fields(h.MustDocker(t, "ps", "-aq")); len(ids) > 0 {
			h.MustDocker(t, append([]string{"rm", "-f"}, ids...)...)
		}
	}
	removed := time.Since(start)
	requireNoCrossHostLeaks(t, m.hosts, 30*time.Second)
	t.Logf("all containers removed in %v; every VXLAN table empty %v later",
		removed.Round(time.Millisecond), (time.Since(start) - removed).Round(time.Millisecond))
	for _, h := range m.hosts {
		// What stays are the other hosts' own addresses: every host still
		// has the network.
		fdb, neigh := tables(t, h)
		if m.dropHostRecords(h, fdb, neigh); len(fdb)+len(neigh) > 0 {
			t.Errorf("%s: entries left with no container anywhere: fdb %v neigh %v", h.Name, fdb, neigh)
		}
		requireNoLeaks(t, h, 10*time.Second)
	}
}
