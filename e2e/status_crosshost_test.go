package e2e

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/doctor"
	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
	"github.com/vxbridge/vxbridge/status"
)

// TestStatusCrossHost checks the cross-host part of status, metrics and
// doctor on two hosts sharing a VXLAN network through etcd, and that an
// etcd outage shows up in each.
func TestStatusCrossHost(t *testing.T) {
	requirePlugin(t)
	testbed.EnsureCommands(t, map[string]string{"etcd": "etcd-server"})
	const vni = 93
	ul := testbed.NewUnderlay(t)
	etcdURL := "http://" + ul.IP + ":2379"
	dir := t.TempDir()
	etcd := ul.NetNS().Start(t, filepath.Join(dir, "etcd.log"), "etcd",
		"--name", "ul", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "ul=http://127.0.0.1:2380", "--log-level", "warn")
	testbed.WaitFor(t, 15*time.Second, func() error {
		_, err := ul.NetNS().TryExec("etcdctl", "--endpoints", etcdURL, "endpoint", "health")
		return err
	})
	var hosts []*testbed.Host
	vteps := map[*testbed.Host]string{}
	for i := range 2 {
		h := testbed.NewHost(t, testbed.HostOptions{Name: fmt.Sprintf("x%d", i+1)})
		vteps[h] = ul.Attach(t, h)
		h.ImportImage(t)
		h.StartPlugin(t, pluginBin, "--etcd-endpoints", etcdURL, "--vtep-interface", testbed.UnderlayHostLink,
			"--metrics-listen", metricsAddr)
		createNetwork(t, h, "xstat", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName,
			"--subnet", "10.93.0.0/24", "-o", fmt.Sprintf("vxlan.id=%d", vni))
		runContainer(t, h, fmt.Sprintf("xc%d", i+1), "xstat")
		hosts = append(hosts, h)
	}
	h1, h2 := hosts[0], hosts[1]
	waitPing(t, h1, "xc1", containerIP(t, h2, "xc2", "xstat", false))

	var rep *status.Report
	testbed.WaitFor(t, 20*time.Second, func() error {
		rep = statusJSON(t, h1, "")
		if c := rep.Cluster; c == nil || len(c.Peers) != 1 || c.FDBEntries == 0 {
			return fmt.Errorf("cluster part not complete yet: %+v", c)
		}
		return nil
	})
	c := rep.Cluster
	if !c.Etcd.Connected || c.VTEP != vteps[h1] || c.Peers[0].VTEP != vteps[h2] || !c.Peers[0].Health.OK ||
		len(rep.Networks) != 1 || rep.Networks[0].VNI != vni || c.NeighborEntries == 0 {
		t.Errorf("status on %s: networks %+v, cluster %+v", h1.Name, rep.Networks, c)
	}
	table := runCLI(t, h1, true, "status")
	for _, want := range []string{"VXLAN PEERS (1)", vteps[h2], fmt.Sprint(vni), "connected", "all healthy"} {
		if !strings.Contains(table, want) {
			t.Errorf("status table lacks %q:\n%s", want, table)
		}
	}
	m := scrape(t, h1)
	wantGauge(t, m, "vxbridge_cluster_enabled", nil, 1)
	wantGauge(t, m, "vxbridge_etcd_connected", nil, 1)
	wantGauge(t, m, "vxbridge_vxlan_peers", nil, 1)
	if v := value(t, m, "vxbridge_fdb_entries", nil); v != float64(c.FDBEntries) {
		t.Errorf("vxbridge_fdb_entries %v, status says %d", v, c.FDBEntries)
	}
	if f := finding(t, doctorJSON(t, h1, false), "etcd"); f.Level != doctor.OK {
		t.Errorf("doctor etcd with etcd up: %+v", f)
	}

	// etcd goes away: status, metrics and doctor say so.
	if err := etcd.Stop(); err != nil {
		t.Fatal(err)
	}
	testbed.WaitFor(t, 60*time.Second, func() error {
		if rep := statusJSON(t, h1, ""); rep.Cluster == nil || rep.Cluster.Etcd.Connected {
			return errors.New("status still says etcd is connected")
		}
		return nil
	})
	wantGauge(t, scrape(t, h1), "vxbridge_etcd_connected", nil, 0)
	if f := finding(t, doctorJSON(t, h1, true), "etcd"); f.Level != doctor.Fail || !strings.Contains(f.Fix, "etcdctl") {
		t.Errorf("doctor etcd with etcd down: %+v", f)
	}
	if table := runCLI(t, h1, true, "status"); !strings.Contains(table, "NOT CONNECTED") {
		t.Errorf("status table with etcd down:\n%s", table)
	}
}
