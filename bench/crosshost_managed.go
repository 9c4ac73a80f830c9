package bench

import (
	"fmt"
	"testing"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// Figure 4's managed-plugin path runs between two more hosts, C and D, on
// the same underlay and etcd as A and B, where vxbridge is installed as a
// Docker managed plugin from the repository's config.json (as `make
// plugin` does), on a cross-host network of their own.
const (
	managedPath   = "vxbridge, managed plugin"
	managedPlugin = "vxbridge:bench"
	mxVNI         = 94
	mxNet         = "benchmx"
	mxSubnet      = "10.94.0.0/24"
	mxPrefix24    = "10.94.0."
)

// managedPair builds hosts C and D with the managed plugin enabled, the
// network mxNet on both, an iperf3 server container on C (.10) and a client
// container on D (.20), and returns C and D.
func (x *xhosts) managedPair(t testing.TB, bin string) (c, d *testbed.Host) {
	t.Helper()
	dir := testbed.PluginDir(t, "..", bin)
	var hs [2]*testbed.Host
	for i := range hs {
		h := testbed.NewHost(t, testbed.HostOptions{Name: fmt.Sprintf("bench%c", 'c'+i)})
		x.ul.Attach(t, h)
		h.ImportImageSpec(t, x.image)
		h.InstallPlugin(t, managedPlugin, dir, "VXBRIDGE_LOG_LEVEL=warn", "VXBRIDGE_ETCD_ENDPOINTS="+x.etcdURL,
			"VXBRIDGE_VTEP_INTERFACE="+testbed.UnderlayHostLink, "VXBRIDGE_HOST_TTL="+x.ttl.String())
		h.MustDocker(t, "plugin", "enable", managedPlugin)
		hs[i] = h
	}
	for _, h := range hs {
		h.MustDocker(t, "network", "create", "-d", managedPlugin, "--ipam-driver", managedPlugin,
			"--subnet", mxSubnet, "-o", fmt.Sprintf("vxlan.id=%d", mxVNI), mxNet)
	}
	run(t, hs[0], "srvmx", mxNet, mxPrefix24+"10", iperfBin, "-s")
	run(t, hs[1], "climx", mxNet, mxPrefix24+"20", "sleep", "1000000")
	return hs[0], hs[1]
}
