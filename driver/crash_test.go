package driver

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/driver/ports"
	"github.com/vxbridge/vxbridge/internal/testutil/fakes"
)

// crashed is what the test hook panics with: the driver-tier stand-in for
// the SIGKILL of the crashhook build.
type crashed string

// lifecycle is docker's call sequence for one network with one published
// container, run to the end.
func lifecycle(h *portsHarness) error {
	steps := []func() error{
		func() error { return h.d.CreateNetwork(createReq(netA, "10.10.0.0/24", "10.10.0.1/24", nil)) },
		func() error {
			_, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epID(1),
				Interface: &network.EndpointInterface{Address: "10.10.0.2/24"}})
			return err
		},
		func() error {
			_, err := h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: epID(1), SandboxKey: "/x"})
			return err
		},
		func() error { return h.program(netA, epID(1), ":8080:80/tcp") },
		func() error {
			return h.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{NetworkID: netA, EndpointID: epID(1)})
		},
		func() error { return h.d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: epID(1)}) },
		func() error {
			return h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: epID(1)})
		},
		func() error { return h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}) },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
	}
	return nil
}

// runUntilCrash runs the lifecycle and reports the crash point it died at.
func runUntilCrash(h *portsHarness) (point string, err error) {
	defer func() {
		if r := recover(); r != nil {
			c, ok := r.(crashed)
			if !ok {
				panic(r)
			}
			point = string(c)
		}
	}()
	return "", lifecycle(h)
}

// TestCrashPointsAreHitInOrder: one lifecycle passes every driver crash
// point, in the order CrashPoints lists them.
func TestCrashPointsAreHitInOrder(t *testing.T) {
	h := newPortsHarnessEmpty(t)
	var hit []string
	h.d.crashHook = func(p string) { hit = append(hit, p) }
	if err := lifecycle(h); err != nil {
		t.Fatal(err)
	}
	want := []string{CrashNetworkKernel, CrashNetworkSaved, CrashEndpointVeth, CrashEndpointSaved, CrashJoinSaved,
		CrashPortsKernel, CrashPortsRevokeRecord, CrashLeaveSaved, CrashEndpointDeleted, CrashEndpointVethGone,
		CrashNetworkDeleted}
	if !slices.Equal(hit, want) {
		t.Fatalf("crash points hit:\n %v\nwant\n %v", hit, want)
	}
	for _, p := range CrashPoints {
		if !slices.Contains(hit, p) {
			t.Errorf("crash point %q is listed but never reached", p)
		}
	}
}

// TestCrashAtEveryPointConverges kills the driver at each point, starts a new
// one on the same store and kernel, and checks that Reconcile leaves the
// kernel matching the records, and that docker's retries then finish the
// lifecycle with nothing left.
func TestCrashAtEveryPointConverges(t *testing.T) {
	for _, point := range CrashPoints {
		t.Run(strings.ReplaceAll(point, "/", "_"), func(t *testing.T) {
			h := newPortsHarnessEmpty(t)
			h.d.crashHook = func(p string) {
				if p == point {
					panic(crashed(p))
				}
			}
			got, err := runUntilCrash(h)
			if err != nil || got != point {
				t.Fatalf("died at %q (err %v), want %q", got, err, point)
			}
			// Restart: a new driver over the same store, kernel and sockets.
			h.links.Flush() // the kernel's reaper goes on without the plugin
			h.d = New(Config{Store: h.st, Links: h.links, Firewall: h.fw, Ports: h.res,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if _, err := h.d.Reconcile(); err != nil {
				t.Fatalf("reconcile after crash at %s: %v", point, err)
			}
			checkConverged(t, h)
			// Docker cleans up what it knows of: deletes are idempotent.
			h.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{NetworkID: netA, EndpointID: epID(1)})
			h.d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: epID(1)})
			if err := h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: epID(1)}); err != nil {
				t.Fatal(err)
			}
			if err := h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}); err != nil {
				t.Fatal(err)
			}
			h.links.Flush()
			if names := h.links.Names(); len(names) != 0 {
				t.Errorf("links left: %v", names)
			}
			if len(h.fw.Nets) != 0 || len(h.fw.Ports) != 0 || len(h.res.Keys()) != 0 {
				t.Errorf("left: rules %v, port rules %v, sockets %v", h.fw.Nets, h.fw.Ports, h.res.Keys())
			}
			// And the same network and container can be made again.
			h.d.crashHook = nil
			if err := lifecycle(h); err != nil {
				t.Fatalf("lifecycle after recovery: %v", err)
			}
		})
	}
}

// checkConverged: every link is claimed by a record and every record has
// its links; rules and sockets are exactly the stored ones.
func checkConverged(t *testing.T, h *portsHarness) {
	t.Helper()
	nets, _ := h.st.Networks()
	eps, _ := h.st.Endpoints()
	var want []string
	netIDs := map[string]bool{}
	for _, n := range nets {
		want = append(want, n.Bridge)
		netIDs[n.ID] = true
	}
	wantPorts := 0
	published := map[string]bool{}
	for _, ep := range eps {
		want = append(want, ep.HostVeth)
		wantPorts += len(ep.Ports)
		published[ep.ID] = len(ep.Ports) > 0
	}
	var have []string
	for name := range h.links.Names() {
		have = append(have, name)
	}
	sort.Strings(want)
	sort.Strings(have)
	if !slices.Equal(want, have) {
		t.Errorf("links %v, want exactly the recorded %v", have, want)
	}
	for id := range h.fw.Nets {
		if !netIDs[id] {
			t.Errorf("firewall rules of unrecorded network %s", id[:12])
		}
	}
	if len(h.fw.Nets) != len(netIDs) {
		t.Errorf("firewall networks %d, want %d", len(h.fw.Nets), len(netIDs))
	}
	if got := len(h.res.Keys()); got != wantPorts {
		t.Errorf("%d host ports held, want the %d recorded", got, wantPorts)
	}
	for id := range h.fw.Ports {
		if !published[id] {
			t.Errorf("port rules of endpoint %s, which has no recorded ports", id[:12])
		}
	}
	for id, p := range published {
		if _, ok := h.fw.Ports[id]; p && !ok {
			t.Errorf("no port rules for endpoint %s, which has recorded ports", id[:12])
		}
	}
}

// newPortsHarnessEmpty is a ports harness without a network.
func newPortsHarnessEmpty(t *testing.T) *portsHarness {
	t.Helper()
	h := &portsHarness{harness: newHarness(t), res: fakes.NewPorts()}
	h.d.hostPorts = ports.NewAllocator(h.res)
	return h
}
