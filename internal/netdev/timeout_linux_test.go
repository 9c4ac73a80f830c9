package netdev

import (
	"reflect"
	"testing"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

// handleSockets reads nlh's sockets. The netlink package keeps them, and
// the deadlines it applies to them, private: this reads its field, and
// fails the test if a new version of the package renamed it.
func handleSockets(t *testing.T, nlh *netlink.Handle) map[int]*nl.SocketHandle {
	t.Helper()
	f := reflect.ValueOf(nlh).Elem().FieldByName("sockets")
	if !f.IsValid() || f.Type() != reflect.TypeOf(map[int]*nl.SocketHandle{}) {
		t.Fatalf("netlink.Handle has no field sockets of type map[int]*nl.SocketHandle any more: check how it keeps its timeouts")
	}
	return *(*map[int]*nl.SocketHandle)(unsafe.Pointer(f.UnsafeAddr()))
}

func requireTimeouts(t *testing.T, what string, socks ...*nl.SocketHandle) {
	t.Helper()
	if len(socks) == 0 {
		t.Fatalf("%s: no socket", what)
	}
	for _, s := range socks {
		send, recv := s.Socket.GetTimeouts()
		if send != RequestTimeout || recv != RequestTimeout {
			t.Errorf("%s: socket waits %v to send, %v to receive; want %v", what, send, recv, RequestTimeout)
		}
	}
}

// Every handle and socket vxbridge opens waits for the kernel at most
// RequestTimeout: a handle opened with the netlink package's NewHandleAt
// has no deadline at all, and a request stuck behind RTNL would hold the
// driver's lock for good.
func TestHandlesTimeOut(t *testing.T) {
	ns := nstest.New(t)
	for _, c := range []struct {
		what string
		ns   netns.NsHandle
	}{{"OpenHandle(namespace)", ns.NsHandle(t)}, {"OpenHandle(none)", netns.None()}} {
		nlh, err := OpenHandle(c.ns)
		if err != nil {
			t.Fatal(err)
		}
		var socks []*nl.SocketHandle
		for _, s := range handleSockets(t, nlh) {
			socks = append(socks, s)
		}
		requireTimeouts(t, c.what, socks...)
		nlh.Close()
	}
	sock, err := Socket(ns.NsHandle(t))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Socket.Close()
	requireTimeouts(t, "Socket", sock)
}

// The netlink package's own per-request sockets (the zero Handle, which
// bridge.New(nil) and vxlan's default use) get RequestTimeout at start-up.
func TestUseRequestTimeout(t *testing.T) {
	old := netlink.GetSocketTimeout()
	t.Cleanup(func() { _ = netlink.SetSocketTimeout(old) })
	if err := UseRequestTimeout(); err != nil {
		t.Fatal(err)
	}
	if got := netlink.GetSocketTimeout(); got != RequestTimeout {
		t.Fatalf("per-request sockets wait %v, want %v", got, RequestTimeout)
	}
}
