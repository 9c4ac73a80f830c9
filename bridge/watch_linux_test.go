package bridge

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// linkMsg is an RTM_NEWLINK as the kernel sends it: ifinfomsg, the name,
// and the kind nested in IFLA_LINKINFO (omitted when kind is "").
func linkMsg(typ uint16, name, kind string) syscall.NetlinkMessage {
	data := nl.NewIfInfomsg(unix.AF_UNSPEC).Serialize()
	data = append(data, nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)).Serialize()...)
	if kind != "" {
		info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
		info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated(kind))
		data = append(data, info.Serialize()...)
	}
	return syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: typ}, Data: data}
}

func TestNewBridge(t *testing.T) {
	for _, c := range []struct {
		msg  syscall.NetlinkMessage
		name string
		ok   bool
	}{
		{linkMsg(unix.RTM_NEWLINK, "br-x", "bridge"), "br-x", true},
		{linkMsg(unix.RTM_NEWLINK, "vxh0", "veth"), "", false},
		{linkMsg(unix.RTM_DELLINK, "br-x", "bridge"), "", false},
		{linkMsg(unix.RTM_NEWLINK, "eth0", ""), "", false},
		{syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: unix.RTM_NEWLINK}, Data: []byte{1, 2}}, "", false},
	} {
		name, ok := newBridge(c.msg)
		if name != c.name || ok != c.ok {
			t.Errorf("newBridge(%d %+v) = %q %t, want %q %t", c.msg.Header.Type, c.msg.Data, name, ok, c.name, c.ok)
		}
	}
}

func FuzzNewBridge(f *testing.F) {
	f.Add(linkMsg(unix.RTM_NEWLINK, "br-x", "bridge").Data)
	f.Add(linkMsg(unix.RTM_NEWLINK, "vxh0", "veth").Data)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		name, ok := newBridge(syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: unix.RTM_NEWLINK}, Data: data})
		if ok && name == "" {
			t.Fatalf("a bridge without a name from %x", data)
		}
	})
}

// In a fresh namespace: a bridge appearing is reported by name, a veth is
// not, and the watch ends when its context does.
func TestWatchBridges(t *testing.T) {
	m, n := newTestManager(t)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan string, 16)
	done := make(chan error, 1)
	go func() { done <- m.WatchBridges(ctx, func(name string) { got <- name }) }()
	h := n.Handle()
	// The subscription races the first link: add bridges until one is seen.
	deadline := time.After(10 * time.Second)
	addForeign(t, h, foreignVeth("notabr"), "")
	for i := 0; ; i++ {
		name := "wbr" + string(rune('a'+i%26))
		addForeign(t, h, &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}, "")
		select {
		case g := <-got:
			if g != name && g[:3] != "wbr" {
				t.Fatalf("reported %q, want a bridge name", g)
			}
		case <-time.After(200 * time.Millisecond):
			continue
		case <-deadline:
			t.Fatal("no bridge reported within 10 s")
		}
		break
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WatchBridges after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchBridges did not return after its context ended")
	}
	for len(got) > 0 {
		if g := <-got; g[:3] != "wbr" {
			t.Errorf("reported %q: only bridges may be", g)
		}
	}
}
