package names

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
	"github.com/vxbridge/vxbridge/namespace"
)

// TestOpenSandbox: the learner asks a DNS server on 127.0.0.11 inside
// another network namespace, as docker's embedded DNS is in a container's,
// and finds the name once that server knows it.
func TestOpenSandbox(t *testing.T) {
	if testing.Short() {
		t.Skip("kernel test")
	}
	path := "/run/netns/" + testNetNS(t, "vxnames")
	known := make(chan struct{})
	serveEmbeddedDNS(t, path, known)
	if _, err := OpenSandbox("/nonexistent/netns/x"); err == nil {
		t.Fatal("opened a sandbox that does not exist")
	}
	l := NewLearner(nil, nil)
	defer l.Close()
	r := newResult()
	l.Learn("e1", path, ctrAddr, r.found)
	time.Sleep(50 * time.Millisecond)
	close(known)
	if name, domain := r.wait(t); name != "web" || domain != "xnet" {
		t.Fatalf("found %q %q", name, domain)
	}
	sb, err := OpenSandbox(path)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if sb.Resolves(context.Background(), "db", ctrAddr) {
		t.Fatal("resolves a name the server does not know")
	}
}

// TestSandboxInDockerdsMounts: docker mounted the sandbox in a mount
// namespace of its own (dockerd with private mounts): the path is an empty
// file here, and the namespace is found through dockerd's root.
func TestSandboxInDockerdsMounts(t *testing.T) {
	if testing.Short() {
		t.Skip("kernel test")
	}
	name := testNetNS(t, "vxnames2")
	dir := t.TempDir()
	key := dir + "/sandbox"
	if err := os.WriteFile(key, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A process called dockerd, in this network namespace, whose private
	// mounts hold the sandbox.
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	fake := dir + "/dockerd"
	if out, err := exec.Command("cp", sleep, fake).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
		fmt.Sprintf("mount --bind /run/netns/%s %s && exec %s 60", name, key, fake))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var got string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if got, err = sandboxPath(key); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || got != fmt.Sprintf("/proc/%d/root%s", cmd.Process.Pid, key) {
		t.Fatalf("sandboxPath = %q, %v; want it through dockerd's root", got, err)
	}
	sb, err := OpenSandbox(key)
	if err != nil {
		t.Fatal(err)
	}
	sb.Close()
}

// TestSandboxInHeldMountNS: the sandbox is mounted only in a mount
// namespace this process is not in, and no dockerd leads there: a managed
// plugin's case, whose own mounts lack docker's. The learner finds the
// name through that mount namespace, held open, and not without it.
func TestSandboxInHeldMountNS(t *testing.T) {
	if testing.Short() {
		t.Skip("kernel test")
	}
	path := "/run/netns/" + testNetNS(t, "vxnames3") // before the mount namespace, which copies its mount
	known := make(chan struct{})
	close(known)
	serveEmbeddedDNS(t, path, known)
	mnt, err := namespace.OpenMountNS(nstest.MountNS(t))
	if err != nil || mnt == nil {
		t.Fatalf("OpenMountNS = %v, %v", mnt, err)
	}
	defer mnt.Close()
	key := t.TempDir() + "/sandbox"
	if err := os.WriteFile(key, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := mnt.Run(func() error { return unix.Mount(path, key, "", unix.MS_BIND, "") }); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSandbox(key); !errors.Is(err, ErrNoSandbox) {
		t.Fatalf("OpenSandbox in our own mounts = %v; want %v", err, ErrNoSandbox)
	}
	l := NewLearner(SandboxOpener(mnt), nil)
	defer l.Close()
	r := newResult()
	l.Learn("e1", key, ctrAddr, r.found)
	if name, domain := r.wait(t); name != "web" || domain != "xnet" {
		t.Fatalf("found %q %q", name, domain)
	}
}

// serveEmbeddedDNS serves 127.0.0.11:53 in the network namespace at path,
// as docker's embedded DNS, until the test ends: web.xnet is the PTR of
// ctrAddr once known is closed, no name before.
func serveEmbeddedDNS(t *testing.T, path string, known <-chan struct{}) {
	t.Helper()
	h, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var pc net.PacketConn
	if err := namespace.Do(h, func() error {
		var err error
		pc, err = net.ListenPacket("udp4", "127.0.0.11:53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		select {
		case <-known:
			if q.Question[0].Qtype == dns.TypePTR && q.Question[0].Name == "5.0.90.10.in-addr.arpa." {
				r.Answer = append(r.Answer, &dns.PTR{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypePTR, Class: dns.ClassINET}, Ptr: "web.xnet."})
			}
		default:
			r.Rcode = dns.RcodeNameError // docker has not registered it yet
		}
		w.WriteMsg(r)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
}

// testNetNS makes a named network namespace with lo up, deleted when the
// test ends, and returns its name.
func testNetNS(t *testing.T, prefix string) string {
	t.Helper()
	nstest.RequireRoot(t)
	name := fmt.Sprintf("%s-%d", prefix, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	return name
}
