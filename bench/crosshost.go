package bench

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/bench/result"
	"github.com/vxbridge/vxbridge/cluster"
	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// CrossHostOptions sizes figure 4.
type CrossHostOptions struct {
	Rounds       int
	IperfSeconds int // measured seconds per iperf3 test (one more is omitted)
	PingCount    int
}

// xpath is one way from host B to host A.
type xpath struct {
	name, what string
	target     string                               // address on A
	exec       func(argv ...string) (string, error) // runs argv on B's side
	mtu        func() int                           // the sender's interface MTU
	iperf      func(args ...string) (string, error) // iperf3 client on B
	ping       func(args ...string) (string, error) // busybox ping on B
}

const anchorPath = "raw vxlan"

// BenchCrossHost measures TCP throughput (iperf3, one stream, B to A) and
// round-trip time (busybox ping, one echo every 10 ms) between two namespace
// hosts over these paths, one test of each per round, the order rotating:
//   - underlay: host to host over the veth underlay;
//   - raw vxlan: a kernel VXLAN device in each host namespace (VNI 97,
//     static remote), host to host;
//   - kernel bridge + veth: a bridge with a VXLAN port (VNI 98) and a veth
//     to a namespace on each host, made by hand in the host's namespace
//     (where br_netfilter is on), namespace to namespace, no docker, no
//     plugin: vxbridge's topology before docs/datapath-netns.md;
//   - bridge + veth in a namespace of their own: the same by hand, the way
//     docs/datapath-netns.md has vxbridge build it;
//   - vxbridge: container to container on a vxbridge cross-host network;
//   - vxbridge, managed plugin: the same between two more hosts, C and D,
//     where vxbridge runs as a Docker managed plugin (config.json), D to C;
//   - docker overlay: container to container on an attachable overlay
//     network of a two-node swarm of the same hosts;
//
// iperf3 and ping run in the containers (the bench image) for the last
// three.
func BenchCrossHost(t testing.TB, bin string, o CrossHostOptions) *result.CrossHost {
	x := newXHosts(t, bin, cluster.DefaultTTL)
	a, b := x.h[0], x.h[1]
	_, d := x.managedPair(t, bin)

	// Servers on A: one in the host namespace (underlay and raw vxlan),
	// one in the by-hand namespace, one per container network.
	a.NetNS().Start(t, filepath.Join(t.TempDir(), "iperf-host.log"), "iperf3", "-s")
	hand, own := x.handBuilt(t)
	hand[0].Start(t, filepath.Join(t.TempDir(), "iperf-hand.log"), "iperf3", "-s")
	own[0].Start(t, filepath.Join(t.TempDir(), "iperf-own.log"), "iperf3", "-s")
	run(t, a, "srvvx", xNet, xPrefix24+"10", iperfBin, "-s")
	run(t, a, "srvov", ovNet, ovPrefix+"10", iperfBin, "-s")
	run(t, b, "clivx", xNet, xPrefix24+"20", "sleep", "1000000")
	run(t, b, "cliov", ovNet, ovPrefix+"20", "sleep", "1000000")

	inB := func(argv ...string) (string, error) { return b.TryExec(argv[0], argv[1:]...) }
	inHand := func(argv ...string) (string, error) { return hand[1].TryExec(argv[0], argv[1:]...) }
	inOwn := func(argv ...string) (string, error) { return own[1].TryExec(argv[0], argv[1:]...) }
	inCtr := func(h *testbed.Host, name string) func(argv ...string) (string, error) {
		return func(argv ...string) (string, error) { return h.Docker(append([]string{"exec", name}, argv...)...) }
	}
	paths := []*xpath{
		{name: "underlay", what: "host B to host A over the veth underlay", target: x.vtep[0], exec: inB},
		{name: anchorPath, what: "host to host over a kernel VXLAN device (VNI 97, static remote)", target: "10.97.0.1", exec: inB},
		{name: "kernel bridge+veth", what: "namespace to namespace over veth, bridge and a VXLAN port (VNI 98), made by hand", target: "10.98.0.1", exec: inHand},
		{name: "bridge+veth, own namespace", what: "the same by hand with bridge and VXLAN port in a namespace of their own, br_netfilter off there (VNI 99): vxbridge's topology (docs/datapath-netns.md)",
			target: "10.99.0.1", exec: inOwn},
		{name: "vxbridge", what: "container to container on a vxbridge cross-host network", target: xPrefix24 + "10", exec: inCtr(b, "clivx")},
		{name: managedPath, what: "the same between hosts D and C, vxbridge installed as a Docker managed plugin (config.json), its network's namespace mounted in the host's mount namespace",
			target: mxPrefix24 + "10", exec: inCtr(d, "climx")},
		{name: "docker overlay", what: "container to container on docker's overlay (two-node swarm)", target: ovPrefix + "10", exec: inCtr(b, "cliov")},
	}
	for _, p := range paths {
		p := p
		inCtr := strings.HasPrefix(p.name, "vxbridge") || strings.HasPrefix(p.name, "docker")
		p.ping = func(args ...string) (string, error) {
			if inCtr {
				return p.exec(append([]string{"ping"}, args...)...)
			}
			// The same busybox ping outside the containers.
			return p.exec(append([]string{"busybox", "ping"}, args...)...)
		}
		p.iperf = func(args ...string) (string, error) {
			if inCtr {
				return p.exec(append([]string{iperfBin}, args...)...)
			}
			return p.exec(append([]string{"iperf3"}, args...)...)
		}
		p.mtu = func() int { return routeMTU(p.exec, p.target) }
		waitPing(t, p.name, p.ping, p.target)
		// Warm-up, unmeasured: ARP, FDB, the bridge's learning, caches.
		if out, err := p.iperf("-c", p.target, "-t", "1", "-J"); err != nil {
			t.Fatalf("%s: iperf3 warm-up: %v\n%s", p.name, err, out)
		}
	}

	out := &result.CrossHost{Rounds: o.Rounds, IperfSeconds: o.IperfSeconds, PingCount: o.PingCount,
		PingInterval: 0.01, Anchor: anchorPath, Settings: x.settings(t, hand)}
	gbps := make([][]float64, len(paths))
	retr := make([][]int, len(paths))
	rtts := make([][]float64, len(paths))
	lost := make([]int, len(paths))
	for r := 0; r < o.Rounds; r++ {
		for i := range paths {
			k := (i + r) % len(paths)
			p := paths[k]
			g, re := iperf(t, p, o.IperfSeconds)
			gbps[k] = append(gbps[k], g)
			retr[k] = append(retr[k], re)
			ms, l := pingRTTs(t, p, o.PingCount)
			rtts[k] = append(rtts[k], ms...)
			lost[k] += l
			t.Logf("round %d: %-20s %6.2f Gbit/s (%d retransmits), ping p50 %.3f ms", r+1, p.name, g, re,
				result.Median(ms))
		}
	}
	var anchorG, anchorRTT float64
	for i, p := range paths {
		if p.name == anchorPath {
			anchorG, anchorRTT = result.Median(gbps[i]), result.Median(rtts[i])
		}
	}
	for i, p := range paths {
		d := result.SummariseMs(rtts[i])
		g := result.Median(gbps[i])
		out.Paths = append(out.Paths, result.CrossHostPath{Name: p.name, What: p.what, MTU: p.mtu(),
			Gbps: g, GbpsRounds: gbps[i], Retransmits: retr[i], RTT: d, PingLost: lost[i],
			GbpsRatio: g / anchorG, RTTP50Ratio: d.P50Ms / anchorRTT})
	}
	return out
}

// handBuilt makes, on each host, the raw VXLAN device (VNI 97, addresses
// 10.97.0.1 on A and .2 on B) and vxbridge's topology by hand: bridge brh98
// with VXLAN port vxh98 (VNI 98) and a veth to a namespace of its own
// holding 10.98.0.1 (A) or .2 (B), MTU 1450 like vxbridge's links, and the
// proposal's path (ownNamespacePath). It returns the by-hand path's two
// namespaces and the proposal's two container namespaces. br_netfilter passes bridged frames through the
// host's FORWARD chain, where docker's policy is DROP: one ACCEPT for the
// bridge's own traffic, as vxbridge's chain has.
func (x *xhosts) handBuilt(t testing.TB) (ns, own [2]*testbed.NetNS) {
	for i, h := range x.h {
		local, remote := x.vtep[i], x.vtep[1-i]
		vx := func(name, vni string) {
			h.Exec(t, "ip", "link", "add", name, "type", "vxlan", "id", vni, "local", local, "remote", remote,
				"dstport", "4789", "dev", testbed.UnderlayHostLink)
		}
		vx("vxr97", "97")
		h.Exec(t, "ip", "addr", "add", fmt.Sprintf("10.97.0.%d/24", i+1), "dev", "vxr97")
		h.Exec(t, "ip", "link", "set", "vxr97", "up")

		h.Exec(t, "ip", "link", "add", "brh98", "type", "bridge")
		vx("vxh98", "98")
		h.Exec(t, "ip", "link", "set", "vxh98", "master", "brh98", "up")
		ns[i] = testbed.NewNetNS(t)
		testbed.Veth(t, h.NetNS(), "vh98", ns[i], "eth0")
		h.Exec(t, "ip", "link", "set", "vh98", "mtu", "1450", "master", "brh98")
		h.Exec(t, "ip", "link", "set", "brh98", "up")
		ns[i].Exec(t, "ip", "link", "set", "eth0", "mtu", "1450")
		ns[i].Exec(t, "ip", "addr", "add", fmt.Sprintf("10.98.0.%d/24", i+1), "dev", "eth0")
		h.Exec(t, "iptables", "-I", "FORWARD", "-i", "brh98", "-o", "brh98", "-j", "ACCEPT")
		own[i] = x.ownNamespacePath(t, i)
	}
	return ns, own
}

// ownNamespacePath builds, on host i, the topology of docs/datapath-netns.md
// by hand: bridge brn99 and VXLAN port vxn99 (VNI 99; created in
// the host's namespace, so its UDP socket stays on the underlay, then moved)
// in a namespace of their own with br_netfilter off there, and a veth from it
// to a container namespace holding 10.99.0.1 (A) or .2 (B). It returns the
// container namespace.
func (x *xhosts) ownNamespacePath(t testing.TB, i int) *testbed.NetNS {
	h := x.h[i]
	dp, ctr := testbed.NewNetNS(t), testbed.NewNetNS(t)
	h.Exec(t, "ip", "link", "add", "vxn99", "type", "vxlan", "id", "99", "local", x.vtep[i], "remote", x.vtep[1-i],
		"dstport", "4789", "dev", testbed.UnderlayHostLink)
	h.Exec(t, "ip", "link", "set", "vxn99", "netns", dp.Name)
	dp.Exec(t, "ip", "link", "add", "brn99", "type", "bridge")
	dp.Exec(t, "sh", "-c", "echo 0 > /proc/sys/net/bridge/bridge-nf-call-iptables")
	dp.Exec(t, "ip", "link", "set", "vxn99", "master", "brn99", "up")
	testbed.Veth(t, dp, "vn99", ctr, "eth0")
	dp.Exec(t, "ip", "link", "set", "vn99", "mtu", "1450", "master", "brn99", "up")
	dp.Exec(t, "ip", "link", "set", "brn99", "up")
	ctr.Exec(t, "ip", "link", "set", "eth0", "mtu", "1450")
	ctr.Exec(t, "ip", "addr", "add", fmt.Sprintf("10.99.0.%d/24", i+1), "dev", "eth0")
	return ctr
}

var (
	routeDev = regexp.MustCompile(`\bdev (\S+)`)
	linkMTU  = regexp.MustCompile(`\bmtu (\d+)`)
)

// routeMTU is the MTU of the interface the route to target leaves by (ip
// route get; ip link show: /sys of a namespace is not the machine's).
func routeMTU(exec func(argv ...string) (string, error), target string) int {
	out, err := exec("ip", "route", "get", target)
	m := routeDev.FindStringSubmatch(out)
	if err != nil || m == nil {
		return 0
	}
	out, err = exec("ip", "link", "show", "dev", m[1])
	mtu := linkMTU.FindStringSubmatch(out)
	if err != nil || mtu == nil {
		return 0
	}
	n, _ := strconv.Atoi(mtu[1])
	return n
}

// settings records what shapes the data path on host B.
func (x *xhosts) settings(t testing.TB, hand [2]*testbed.NetNS) map[string]string {
	b := x.h[1]
	s := map[string]string{}
	read := func(key, path string) {
		if out, err := b.TryExec("cat", path); err == nil {
			s[key] = strings.TrimSpace(out)
		}
	}
	read("host B net.bridge.bridge-nf-call-iptables", "/proc/sys/net/bridge/bridge-nf-call-iptables")
	read("host B net.bridge.bridge-nf-call-ip6tables", "/proc/sys/net/bridge/bridge-nf-call-ip6tables")
	for _, dev := range []string{testbed.UnderlayHostLink, "vxr97", "vxh98", vxDevice()} {
		if out, err := b.TryExec("ip", "-d", "-o", "link", "show", dev); err == nil {
			s["host B link "+dev] = strings.Join(strings.Fields(out), " ")
		}
	}
	if out, err := b.TryExec("iptables", "-S", "FORWARD"); err == nil {
		s["host B iptables -S FORWARD"] = strings.TrimSpace(out)
	}
	return s
}

type iperfJSON struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   int     `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}

// iperf runs one single-stream iperf3 test (the first second omitted) and
// returns the received rate in Gbit/s and the sender's retransmits. A busy
// server (the previous test's end not yet processed) is retried.
func iperf(t testing.TB, p *xpath, secs int) (float64, int) {
	t.Helper()
	var last string
	for attempt := 0; attempt < 5; attempt++ {
		out, err := p.iperf("-c", p.target, "-t", strconv.Itoa(secs), "-O", "1", "-J")
		var j iperfJSON
		if jerr := json.Unmarshal([]byte(jsonPart(out)), &j); jerr == nil && err == nil && j.Error == "" {
			return j.End.SumReceived.BitsPerSecond / 1e9, j.End.SumSent.Retransmits
		}
		last = fmt.Sprintf("%v: %s", err, out)
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: iperf3: %s", p.name, last)
	return 0, 0
}

// jsonPart drops what a wrapper printed around iperf3's JSON.
func jsonPart(s string) string {
	i, j := strings.IndexByte(s, '{'), strings.LastIndexByte(s, '}')
	if i < 0 || j < i {
		return s
	}
	return s[i : j+1]
}

var pingTime = regexp.MustCompile(`time=([0-9.]+) ms`)

// pingRTTs sends n echo requests 10 ms apart and returns the round-trip
// times of the replies and how many were lost.
func pingRTTs(t testing.TB, p *xpath, n int) ([]float64, int) {
	t.Helper()
	out, _ := p.ping("-c", strconv.Itoa(n), "-i", "0.01", "-W", "2", p.target) // exit 1 when any is lost
	var ms []float64
	for _, m := range pingTime.FindAllStringSubmatch(out, -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		if err == nil {
			ms = append(ms, v)
		}
	}
	if len(ms) == 0 {
		t.Fatalf("%s: no ping reply:\n%s", p.name, out)
	}
	return ms, max(n-len(ms), 0)
}
