package e2e

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// TestFirewallOrderAcrossDockerdRestart sends traffic through the moment
// after a dockerd restart when docker re-inserts its jumps at the top of
// FORWARD (DOCKER-FORWARD on docker 28+, 20.10's per-bridge rules) above
// vxbridge's, until the plugin moves its jump back. With --live-restore
// the containers keep running through it: a TCP stream and pings inside
// the vxbridge network and out through the masquerade must lose nothing,
// and a container on docker's default bridge knocking on a vxbridge
// container the whole time must never get in.
func TestFirewallOrderAcrossDockerdRestart(t *testing.T) {
	requirePlugin(t)
	// Its own containerd: the one dockerd supervises dies with it, and the
	// restarted dockerd then drops the containers it cannot reach.
	h := testbed.NewHostOwnContainerd(t, testbed.HostOptions{Name: "ord", DockerdArgs: []string{"--live-restore"}})
	h.ImportImage(t)
	inet := testbed.NewInternet(t, h)
	h.StartPlugin(t, pluginBin)
	createNetwork(t, h, "ord", "-d", testbed.PluginName, "--ipam-driver", testbed.PluginName, "--subnet", "10.84.1.0/24")
	runContainer(t, h, "osrv", "ord")
	runContainer(t, h, "ocli", "ord")
	runContainer(t, h, "odock", "bridge")
	srvIP := containerIP(t, h, "osrv", "ord", false)
	srv, cli, dock := containerNS(t, h, "osrv"), containerNS(t, h, "ocli"), containerNS(t, h, "odock")
	echo, knock := listenIn(t, srv, ":7"), listenIn(t, srv, ":8")
	go serveEcho(echo)
	go serveEcho(knock)
	waitPing(t, h, "ocli", srvIP)
	waitPing(t, h, "ocli", inet.ServerIPv4)
	if c, err := dialIn(cli, srvIP+":8", time.Second); err != nil {
		t.Fatalf("control: ocli cannot reach osrv:8: %v", err)
	} else {
		c.Close()
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stream streamResult
	var knocks, knockedIn atomic.Int64
	wg.Add(2)
	go func() { defer wg.Done(); stream = runStream(cli, srvIP+":7", stop) }()
	go func() {
		defer wg.Done()
		for !stopped(stop) {
			knocks.Add(1)
			if c, err := dialIn(dock, srvIP+":8", 100*time.Millisecond); err == nil {
				knockedIn.Add(1)
				c.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	pingIn, pingOut := startPing(t, cli, srvIP), startPing(t, cli, inet.ServerIPv4)

	pids := map[string]int{"osrv": containerPid(t, h, "osrv"), "ocli": containerPid(t, h, "ocli")}
	time.Sleep(time.Second)
	knocksBefore := knocks.Load()
	h.StopDockerd(t)
	h.StartDockerd(t) // on the host's containerd: see testbed.NewHostOwnContainerd
	for n, pid := range pids {
		if got := containerPid(t, h, n); got != pid {
			t.Errorf("%s has pid %d after the restart, want %d: not live-restored", n, got, pid)
		}
	}
	time.Sleep(3 * time.Second) // the plugin's reconcile, and then some
	close(stop)
	wg.Wait()
	in, out := pingIn.result(t), pingOut.result(t)
	t.Logf("across the restart: stream %d round trips, longest wait %v, err %v; pings in the network %s, out through the masquerade %s; %d knocks from docker0, %d got in",
		stream.trips, stream.longest.Round(time.Millisecond), stream.err, in, out, knocks.Load(), knockedIn.Load())
	if stream.err != nil || stream.longest > time.Second {
		t.Errorf("the TCP stream inside the network broke or stalled: %v, longest wait %v", stream.err, stream.longest)
	}
	for what, p := range map[string]pingStats{"inside the network": in, "out through the masquerade": out} {
		if p.sent < 100 || p.received != p.sent {
			t.Errorf("pings %s: %s, want none lost", what, p)
		}
	}
	// A knock takes 100 ms (dropped: the dial times out) plus a 20 ms
	// pause: the 3 s after dockerd's start alone, where the order race
	// was, hold about 25.
	if knockedIn.Load() > 0 || knocks.Load()-knocksBefore < 20 {
		t.Errorf("a container on docker0 opened %d of %d connections into the vxbridge network (%d from dockerd's stop on, want 20 or more)",
			knockedIn.Load(), knocks.Load(), knocks.Load()-knocksBefore)
	}
	forward := h.Exec(t, "iptables", "-w", "-S", "FORWARD")
	t.Logf("FORWARD after the restart:\n%s", forward)
}

// containerNS is the network namespace of a running container.
func containerNS(t *testing.T, h *testbed.Host, name string) string {
	t.Helper()
	return fmt.Sprintf("/proc/%d/ns/net", containerPid(t, h, name))
}

// inNetNS runs fn on a thread in the namespace at path. The thread is
// never handed back: Go discards a locked thread whose goroutine ends.
func inNetNS(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := netns.GetFromPath(path)
		if err == nil {
			err = netns.Set(ns)
			ns.Close()
		}
		if err == nil {
			err = fn()
		}
		errc <- err
	}()
	return <-errc
}

// listenIn listens on addr in the namespace at path; the socket stays
// there whichever thread serves it. Closed when the test ends.
func listenIn(t *testing.T, path, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := inNetNS(path, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func dialIn(path, addr string, timeout time.Duration) (c net.Conn, err error) {
	err = inNetNS(path, func() error { c, err = net.DialTimeout("tcp4", addr, timeout); return err })
	return c, err
}

// serveEcho echoes every connection until the listener closes.
func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() { _, _ = io.Copy(c, c); c.Close() }()
	}
}

func stopped(stop chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// streamResult is what one TCP connection saw: round trips completed, the
// longest wait for one, the error that ended it early.
type streamResult struct {
	trips   int
	longest time.Duration
	err     error
}

// runStream keeps one connection busy with numbered 8-byte round trips,
// one every 20 ms, until stop.
func runStream(from, addr string, stop chan struct{}) (r streamResult) {
	c, err := dialIn(from, addr, 2*time.Second)
	if err != nil {
		return streamResult{err: err}
	}
	defer c.Close()
	buf := make([]byte, 8)
	for n := uint64(0); !stopped(stop); n++ {
		start := time.Now()
		binary.BigEndian.PutUint64(buf, n)
		_ = c.SetDeadline(start.Add(10 * time.Second))
		if _, err := c.Write(buf); err != nil {
			r.err = err
			return r
		}
		if _, err := io.ReadFull(c, buf); err != nil || binary.BigEndian.Uint64(buf) != n {
			r.err = fmt.Errorf("round trip %d: %v (got %d)", n, err, binary.BigEndian.Uint64(buf))
			return r
		}
		r.trips++
		r.longest = max(r.longest, time.Since(start))
		time.Sleep(20 * time.Millisecond)
	}
	return r
}

// pinger is the host's ping running in a container's namespace.
type pinger struct {
	cmd *exec.Cmd
	out strings.Builder
}

type pingStats struct{ sent, received int }

func (p pingStats) String() string { return fmt.Sprintf("%d sent, %d received", p.sent, p.received) }

// startPing pings addr every 20 ms from the namespace at path until result.
func startPing(t *testing.T, path, addr string) *pinger {
	t.Helper()
	p := &pinger{cmd: exec.Command("nsenter", "--net="+path, "ping", "-q", "-n", "-i", "0.02", "-W", "1", addr)}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.cmd.Process.Kill() })
	return p
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)

// result interrupts ping (it then prints its summary) and reads it.
func (p *pinger) result(t *testing.T) pingStats {
	t.Helper()
	_ = p.cmd.Process.Signal(os.Interrupt)
	_ = p.cmd.Wait()
	m := pingSummary.FindStringSubmatch(p.out.String())
	if m == nil {
		t.Fatalf("ping printed no summary:\n%s", p.out.String())
	}
	sent, _ := strconv.Atoi(m[1])
	received, _ := strconv.Atoi(m[2])
	return pingStats{sent, received}
}
