package bench

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/vxlan"
)

// Figures 4 and 5 run on two namespace hosts (internal/testutil/testbed) joined by an
// underlay namespace that also runs etcd. Each host has its own dockerd and
// vxbridge; the two dockerds form a swarm for docker's overlay driver.
const (
	xVNI      = 95
	xNet      = "benchvx" // vxbridge cross-host network, on both hosts
	xSubnet   = "10.95.0.0/24"
	ovNet     = "benchov" // docker overlay, attachable, made on the manager
	ovSubnet  = "10.96.0.0/24"
	benchImg  = "vxtest/bench:latest"
	probeBin  = "/bin/convergenceprobe"
	iperfBin  = "/usr/bin/iperf3"
	probeDir  = "/probe" // the prober's shared directory inside its container
	xPrefix24 = "10.95.0."
	ovPrefix  = "10.96.0."
)

// xhosts is host A (x.h[0], swarm manager) and host B (x.h[1]).
type xhosts struct {
	ul      *testbed.Underlay
	etcd    *testbed.Process
	etcdURL string
	h       [2]*testbed.Host
	vtep    [2]string // underlay addresses
	ttl     time.Duration
	image   testbed.ImageSpec // the bench image, on every host
}

// newXHosts builds both hosts, the vxbridge network xNet and the overlay
// network ovNet, with the bench image (busybox, iperf3 and its libraries,
// the prober) imported on both. Everything goes when the test ends: the
// containers and the swarm first, then the hosts (dockerd, plugin, their
// namespaces and directories), etcd and the underlay.
func newXHosts(t testing.TB, bin string, ttl time.Duration) *xhosts {
	t.Helper()
	testbed.EnsureCommands(t, map[string]string{"etcd": "etcd-server", "iperf3": "iperf3", "ldd": "libc-bin"})
	x := &xhosts{ul: testbed.NewUnderlay(t), ttl: ttl}
	x.etcdURL = "http://" + x.ul.IP + ":2379"
	dir := t.TempDir()
	x.etcd = x.ul.NetNS().Start(t, filepath.Join(dir, "etcd.log"), "etcd",
		"--name", "ul", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", x.etcdURL, "--advertise-client-urls", x.etcdURL,
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "ul=http://127.0.0.1:2380", "--log-level", "warn")
	testbed.WaitFor(t, 15*time.Second, func() error {
		_, err := x.ul.NetNS().TryExec("etcdctl", "--endpoints", x.etcdURL, "endpoint", "health")
		return err
	})
	upstream := namesUpstream(t, x.ul, dir)
	spec := testbed.ImageSpec{Tag: benchImg, Files: map[string]string{
		probeBin: testbed.BuildStaticGo(t, "github.com/vxbridge/vxbridge/bench/convergenceprobe"),
	}}
	testbed.AddDynamic(t, &spec, iperfBin, "iperf3")
	x.image = spec
	for i := range x.h {
		h := testbed.NewHost(t, testbed.HostOptions{Name: fmt.Sprintf("bench%c", 'a'+i), DockerdArgs: []string{"--dns", upstream}})
		x.vtep[i] = x.ul.Attach(t, h)
		h.ImportImageSpec(t, spec)
		h.StartPlugin(t, bin, "--etcd-endpoints", x.etcdURL, "--vtep-interface", testbed.UnderlayHostLink,
			"--host-ttl", ttl.String(), "--log-level", pluginLogLevel())
		x.h[i] = h
	}
	for _, h := range x.h {
		h.MustDocker(t, "network", "create", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName,
			"--subnet", xSubnet, "-o", fmt.Sprintf("vxlan.id=%d", xVNI), xNet)
	}
	x.swarm(t)
	return x
}

// swarm makes A a swarm manager and B a worker over the underlay, and the
// attachable overlay network. The cleanup (registered after the hosts', so
// it runs first) removes the containers, then leaves the swarm.
func (x *xhosts) swarm(t testing.TB) {
	t.Helper()
	a, b := x.h[0], x.h[1]
	t.Cleanup(func() {
		for _, h := range []*testbed.Host{b, a} {
			if d := h.Dockerd(); d == nil || d.Exited() {
				continue
			}
			if ids := strings.Fields(mustOK(h.Docker("ps", "-aq"))); len(ids) > 0 {
				if out, err := h.Docker(append([]string{"rm", "-f"}, ids...)...); err != nil {
					t.Logf("%s: docker rm -f: %v: %s", h.Name, err, out)
				}
			}
			if out, err := h.Docker("swarm", "leave", "--force"); err != nil {
				t.Logf("%s: docker swarm leave: %v: %s", h.Name, err, out)
			}
		}
	})
	a.MustDocker(t, "swarm", "init", "--advertise-addr", x.vtep[0], "--listen-addr", x.vtep[0]+":2377")
	token := strings.TrimSpace(a.MustDocker(t, "swarm", "join-token", "-q", "worker"))
	b.MustDocker(t, "swarm", "join", "--token", token, "--advertise-addr", x.vtep[1],
		"--listen-addr", x.vtep[1]+":2377", x.vtep[0]+":2377")
	a.MustDocker(t, "network", "create", "-d", "overlay", "--attachable", "--subnet", ovSubnet, ovNet)
}

func mustOK(out string, err error) string {
	if err != nil {
		return ""
	}
	return out
}

// run starts a detached container of the bench image on network net with a
// fixed address.
func run(t testing.TB, h *testbed.Host, name, net, ip string, args ...string) {
	t.Helper()
	h.MustDocker(t, append([]string{"run", "-d", "--name", name, "--network", net, "--ip", ip, benchImg}, args...)...)
}

// vxDevice is the vxbridge VXLAN device of xNet.
func vxDevice() string { return vxlan.DeviceName(xVNI) }

// waitPing waits until a ping from argv's place answers.
func waitPing(t testing.TB, what string, ping func(args ...string) (string, error), ip string) {
	t.Helper()
	err := testbed.Poll(60*time.Second, func() error {
		out, err := ping("-c", "1", "-W", "1", ip)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %s not reachable: %v", what, ip, err)
	}
}

// pluginLogLevel is the cross-host plugins' --log-level: warn, unless
// VXBRIDGE_BENCH_LOG_LEVEL says otherwise (debug shows, for example, when
// each container's name was learned and after how many questions).
func pluginLogLevel() string { return cmp.Or(os.Getenv("VXBRIDGE_BENCH_LOG_LEVEL"), "warn") }
