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

	"github.com/vxbridge/vxbridge/internal/testbed"
	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/store"
)

// dockerNet is the part of `docker network inspect` the leak check reads.
type dockerNet struct {
	ID   string `json:"Id"`
	Name string `json:"Name"`
	IPAM struct {
		Driver string `json:"Driver"`
		Config []struct {
			Subnet string `json:"Subnet"`
		} `json:"Config"`
	} `json:"IPAM"`
	Containers map[string]struct {
		Name       string `json:"Name"`
		EndpointID string `json:"EndpointID"`
	} `json:"Containers"`
}

// leakView is what docker, the plugin and the kernel each hold, gathered
// once so every rule of the check compares the same snapshot.
type leakView struct {
	dockerNets map[string]dockerNet // by network id
	dockerEps  map[string]string    // endpoint id -> network id
	report     *status.Report
	pluginEps  map[string]status.Endpoint
	pluginNets map[string]status.Network
	links      map[string]string // name -> `ip -d -o link` line
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
// belongs to a recorded network, endpoint or VXLAN device of a live network;
// (4) every iptables rule tagged vxbridge:ID names a live network (and, for
// port rules, a live endpoint); (5) every IPAM pool is the subnet of a live
// network using the vxbridge IPAM, and every endpoint address it marks taken
// is held by a live endpoint.
func leaks(t testing.TB, h *testbed.Host) []string {
	t.Helper()
	v, err := gatherLeakView(h)
	if err != nil {
		return []string{"leak check could not run: " + err.Error()}
	}
	return v.findings()
}

// requireNoLeaks fails the test with every finding of leaks, polled for up
// to within (the plugin's reconciler may still be converging).
func requireNoLeaks(t testing.TB, h *testbed.Host, within time.Duration) {
	t.Helper()
	var last []string
	err := testbed.Poll(within, func() error {
		last = leaks(t, h)
		if len(last) > 0 {
			return fmt.Errorf("%d leak(s)", len(last))
		}
		return nil
	})
	if err != nil {
		t.Errorf("%s: LEAKS() not empty after %v:\n  %s", h.Name, within, strings.Join(last, "\n  "))
	}
}

func gatherLeakView(h *testbed.Host) (*leakView, error) {
	v := &leakView{dockerNets: map[string]dockerNet{}, dockerEps: map[string]string{},
		pluginEps: map[string]status.Endpoint{}, pluginNets: map[string]status.Network{},
		links: map[string]string{}, addrs: map[string]map[netip.Addr]store.AddressKind{}}

	out, err := h.Docker("network", "ls", "--no-trunc", "--filter", "driver="+testbed.PluginName, "--format", "{{.ID}}")
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
	if v.report, err = status.Fetch(ctx, h.PluginSocket()); err != nil {
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
	for _, line := range strings.Split(out, "\n") {
		f := strings.SplitN(line, ": ", 3)
		if len(f) < 3 {
			continue
		}
		name, _, _ := strings.Cut(f[1], "@")
		v.links[name] = line
	}

	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := h.TryExec(tool)
		if err != nil {
			return nil, fmt.Errorf("%s: %v: %s", tool, err, out)
		}
		v.fwLines = append(v.fwLines, strings.Split(out, "\n")...)
	}

	if err := v.readIPAM(h.PluginStateDir()); err != nil {
		return nil, err
	}
	return v, nil
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
		switch {
		case strings.HasPrefix(alias, "vxbridge:net:"):
			if id := strings.TrimPrefix(alias, "vxbridge:net:"); !v.liveNet(id) {
				add("bridge %s (alias %s): no live network", name, alias)
			}
		case strings.HasPrefix(alias, "vxbridge:vxlan:"):
			if id := strings.TrimPrefix(alias, "vxbridge:vxlan:"); !v.liveNet(id) {
				add("VXLAN device %s (alias %s): no live network", name, alias)
			}
		case strings.HasPrefix(alias, "vxbridge:ep:"):
			if id := strings.TrimPrefix(alias, "vxbridge:ep:"); !v.liveEndpoint(id) {
				add("veth %s (alias %s): no live endpoint", name, alias)
			}
		case strings.HasPrefix(alias, "vxbridge:"):
			// Other owned links (a VTEP and the like) are checked by their
			// own scenarios; they are per host, not per network.
		case strings.HasPrefix(name, "vxb-"):
			add("link %s is named like a vxbridge bridge but has no vxbridge alias: %s", name, strings.TrimSpace(line))
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
	for _, n := range v.dockerNets {
		if n.IPAM.Driver != testbed.PluginName {
			continue
		}
		for _, c := range n.IPAM.Config {
			if p, err := netip.ParsePrefix(c.Subnet); err == nil {
				subnets[p.Masked().String()] = true
			}
		}
	}
	for _, p := range v.pools {
		if !subnets[p.Prefix.Masked().String()] {
			add("IPAM pool %s (%s): no live network uses it", p.Prefix, p.ID)
		}
		var taken []string
		for a, kind := range v.addrs[p.ID] {
			if kind == store.KindEndpoint && !held[a] {
				taken = append(taken, a.String())
			}
		}
		sort.Strings(taken)
		for _, a := range taken {
			add("IPAM address %s of pool %s is taken but no endpoint holds it", a, p.Prefix)
		}
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

// ruleTag is the id a vxbridge rule is tagged with (--comment "vxbridge:ID").
func ruleTag(line string) (string, bool) {
	const marker = `--comment "vxbridge:`
	i := strings.Index(line, marker)
	if i < 0 {
		return "", false
	}
	rest := line[i+len(marker):]
	end := strings.IndexByte(rest, '"')
	if end < 0 {
		return "", false
	}
	return rest[:end], true
}

func TestLeakParsers(t *testing.T) {
	line := `12: vxh1234@if11: <BROADCAST> mtu 1500 master vxb-1 state UP mode DEFAULT group default qlen 1000\    link/ether 02:42 brd ff:ff:ff:ff:ff:ff link-netnsid 0 promiscuity 1 \    alias vxbridge:ep:abcd \    veth`
	if got := linkAlias(line); got != "vxbridge:ep:abcd" {
		t.Errorf("linkAlias = %q", got)
	}
	if got := linkAlias("3: eth0: <UP> mtu 1500"); got != "" {
		t.Errorf("linkAlias without alias = %q", got)
	}
	tag, ok := ruleTag(`-A VXBRIDGE-FORWARD -o vxb-1 -m comment --comment "vxbridge:net1:ep2" -j ACCEPT`)
	if !ok || tag != "net1:ep2" {
		t.Errorf("ruleTag = %q %v", tag, ok)
	}
	if _, ok := ruleTag(`-A FORWARD -j DOCKER-USER`); ok {
		t.Error("ruleTag found a tag in an untagged rule")
	}
	// A record docker forgot, a veth of nothing and a stray pool are found;
	// a consistent view is clean.
	v := &leakView{
		dockerNets: map[string]dockerNet{"n1": {ID: "n1", Name: "a"}},
		dockerEps:  map[string]string{"e1": "n1"},
		report:     &status.Report{},
		pluginNets: map[string]status.Network{"n1": {ID: "n1", Health: status.Healthy()}},
		pluginEps: map[string]status.Endpoint{"e1": {ID: "e1", IPv4: "10.0.0.2/24", Health: status.Healthy()},
			"e2": {ID: "e2", HostVeth: "vxh2", Health: status.Healthy()}},
		links: map[string]string{"vxh9": "9: vxh9@if8: <UP> alias vxbridge:ep:e9 \\ veth"},
		pools: []store.Pool{{ID: "p1", Prefix: netip.MustParsePrefix("10.9.0.0/24")}},
		addrs: map[string]map[netip.Addr]store.AddressKind{"p1": {netip.MustParseAddr("10.9.0.7"): store.KindEndpoint}},
	}
	got := strings.Join(v.findings(), "\n")
	for _, want := range []string{"endpoint record e2", "veth vxh9", "IPAM pool 10.9.0.0/24", "IPAM address 10.9.0.7"} {
		if !strings.Contains(got, want) {
			t.Errorf("findings miss %q:\n%s", want, got)
		}
	}
	delete(v.pluginEps, "e2")
	v.links, v.pools, v.addrs = nil, nil, nil
	if f := v.findings(); len(f) > 0 {
		t.Errorf("consistent view has findings: %v", f)
	}
}
