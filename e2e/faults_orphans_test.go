package e2e

import (
	"encoding/json"

	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// TestFaultOrphansCollected: what docker's lost calls leave behind is freed
// after --orphan-grace. Driven straight on the socket, docker's call
// sequence with the calls a crash or a long outage loses left out:
//   - an endpoint created but never joined (docker rolled it back with a
//     DeleteEndpoint the plugin never heard);
//   - an address handed out in a reply docker never read (it retried and
//     got another);
//
// while a joined endpoint and its address stay. Then LEAKS-style checks:
// no veth, no record and no address is left for nobody.
func TestFaultOrphansCollected(t *testing.T) {
	requireE2E(t)
	if pluginBin == "" {
		t.Fatal(pluginBuildErr)
	}
	ns := testbed.NewNetNS(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "vx.sock")
	const grace = 3 * time.Second
	proc := ns.Start(t, filepath.Join(dir, "plugin.log"), pluginBin, "serve", "--socket", sock,
		"--state-dir", filepath.Join(dir, "state"), "--orphan-grace", grace.String(), "--log-level", "debug")
	t.Cleanup(func() { proc.Stop() })
	call := func(path string, req any, resp any) {
		t.Helper()
		body, _ := json.Marshal(req)
		code, out, err := testbed.PluginCall(sock, path, string(body))
		if err != nil || code != 200 || strings.Contains(out, `"Err":"`) || strings.Contains(out, `"Error":"`) {
			t.Fatalf("%s %s: %d %s %v\n%s", path, body, code, out, err, proc.Log())
		}
		if resp != nil {
			if err := json.Unmarshal([]byte(out), resp); err != nil {
				t.Fatalf("%s reply %q: %v", path, out, err)
			}
		}
	}
	waitFor(t, 20*time.Second, "plugin ready", func() bool {
		code, _, err := testbed.PluginCall(sock, "/Plugin.Activate", "{}")
		return err == nil && code == 200
	})
	var pool struct{ PoolID, Pool string }
	call("/IpamDriver.RequestPool", map[string]any{"AddressSpace": "", "Pool": "10.93.0.0/24"}, &pool)
	var gw struct{ Address string }
	call("/IpamDriver.RequestAddress", map[string]any{"PoolID": pool.PoolID,
		"Options": map[string]string{"RequestAddressType": "com.docker.network.gateway"}}, &gw)
	netID := strings.Repeat("a1", 32)
	call("/NetworkDriver.CreateNetwork", map[string]any{"NetworkID": netID,
		"IPv4Data": []map[string]any{{"AddressSpace": "vxbridge-local", "Pool": pool.Pool, "Gateway": gw.Address}},
		"Options":  map[string]any{"com.docker.network.generic": map[string]any{}}}, nil)
	endpoint := func(id string, join bool) string {
		var a struct{ Address string }
		call("/IpamDriver.RequestAddress", map[string]any{"PoolID": pool.PoolID}, &a)
		call("/NetworkDriver.CreateEndpoint", map[string]any{"NetworkID": netID, "EndpointID": id,
			"Interface": map[string]string{"Address": a.Address}}, nil)
		if join {
			call("/NetworkDriver.Join", map[string]any{"NetworkID": netID, "EndpointID": id, "SandboxKey": "/var/run/docker/netns/x"}, nil)
		}
		return strings.Split(a.Address, "/")[0]
	}
	live, forgotten := strings.Repeat("b2", 32), strings.Repeat("c3", 32)
	liveAddr := endpoint(live, true)
	forgottenAddr := endpoint(forgotten, false)
	var lost struct{ Address string }
	call("/IpamDriver.RequestAddress", map[string]any{"PoolID": pool.PoolID}, &lost)
	lostAddr := strings.Split(lost.Address, "/")[0]
	start := time.Now()

	veth := func(id string) bool {
		_, err := ns.TryExec("ip", "link", "show", "vxh"+id[:12])
		return err == nil
	}
	if !veth(forgotten) || !veth(live) {
		t.Fatal("endpoints' veths missing before the grace")
	}
	// Taken means a specific request for it is refused.
	free := func(addr string) bool {
		body, _ := json.Marshal(map[string]any{"PoolID": pool.PoolID, "Address": addr})
		code, out, err := testbed.PluginCall(sock, "/IpamDriver.RequestAddress", string(body))
		if err != nil || code != 200 || strings.Contains(out, `"Error":"`) {
			return false
		}
		call("/IpamDriver.ReleaseAddress", map[string]any{"PoolID": pool.PoolID, "Address": addr}, nil)
		return true
	}
	if free(forgottenAddr) || free(lostAddr) {
		t.Fatal("addresses already free before the grace")
	}
	waitFor(t, grace+20*time.Second, "the forgotten endpoint and the lost address collected", func() bool {
		return !veth(forgotten) && free(forgottenAddr) && free(lostAddr)
	})
	took := time.Since(start)
	if took < grace {
		t.Errorf("collected after %v, before the %v grace", took, grace)
	}
	t.Logf("collected %v after the calls (grace %v)", took.Round(10*time.Millisecond), grace)
	// The live endpoint keeps everything.
	if !veth(live) || free(liveAddr) {
		t.Errorf("live endpoint lost its veth (%t) or address (free %t)", veth(live), free(liveAddr))
	}
	var st struct {
		Endpoints []struct{ ID string } `json:"endpoints"`
	}
	call("/VxBridge.Status", struct{}{}, &st)
	if len(st.Endpoints) != 1 || st.Endpoints[0].ID != live {
		t.Errorf("endpoint records after collection: %+v, want only the live one", st.Endpoints)
	}
	if !strings.Contains(proc.Log(), "never joined") {
		t.Errorf("no log line for the collected endpoint:\n%s", proc.Log())
	}
	// Docker's own cleanup still works afterwards.
	call("/NetworkDriver.Leave", map[string]any{"NetworkID": netID, "EndpointID": live}, nil)
	call("/NetworkDriver.DeleteEndpoint", map[string]any{"NetworkID": netID, "EndpointID": live}, nil)
	call("/NetworkDriver.DeleteEndpoint", map[string]any{"NetworkID": netID, "EndpointID": forgotten}, nil)
	call("/IpamDriver.ReleaseAddress", map[string]any{"PoolID": pool.PoolID, "Address": liveAddr}, nil)
	call("/NetworkDriver.DeleteNetwork", map[string]any{"NetworkID": netID}, nil)
	call("/IpamDriver.ReleaseAddress", map[string]any{"PoolID": pool.PoolID, "Address": strings.Split(gw.Address, "/")[0]}, nil)
	call("/IpamDriver.ReleasePool", map[string]any{"PoolID": pool.PoolID}, nil)
	if out := ns.Exec(t, "ip", "-o", "link"); strings.Contains(out, "vxh") || strings.Contains(out, "vxb-") {
		t.Errorf("links left after everything was deleted:\n%s", out)
	}
	_ = os.Remove(sock)
}

// waitFor polls cond every 100 ms until it holds or limit passes.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
