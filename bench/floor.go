package bench

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The kernel floor of figure 2: an endpoint's kernel work done the way
// vxbridge does it, with nothing else: the veth pair created up and on the
// bridge (through the netlink package: create, look up, enslave, where
// vxbridge creates enslaved and then sets the port flags, alias and group in
// a second request; the same count of requests), moved into an interface
// group, and a background reaper deleting that group in batches (as
// bridge.RetireLink and its reaper do). Its rate is the most lifecycles per second this machine's kernel
// allows a plugin that makes a veth per endpoint, whatever the plugin does
// besides; its CPU is what the kernel charges per veth, background deletion
// included.

// floorGroup is the bench's own interface group: the plugin in the same
// namespace deletes only its own groups.
const floorGroup = 0x62656e63 // "benc"

// reaper deletes floorGroup in the background while kicked.
type reaper struct {
	mu      sync.Mutex
	cond    *sync.Cond
	pending bool
	running bool
	sock    *nl.SocketHandle // a netlink socket in the plugin's namespace
	err     error
}

// newReaper opens its socket in the namespace at nsPath.
func newReaper(t testing.TB, nsPath string) *reaper {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("reaper socket: %v", err)
	}
	t.Cleanup(s.Close)
	r := &reaper{sock: &nl.SocketHandle{Socket: s}}
	r.cond = sync.NewCond(&r.mu)
	return r
}

func (r *reaper) kick() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = true
	if r.running {
		return
	}
	r.running = true
	go r.run()
}

func (r *reaper) run() {
	for {
		r.mu.Lock()
		if !r.pending {
			r.running = false
			r.cond.Broadcast()
			r.mu.Unlock()
			return
		}
		r.pending = false
		r.mu.Unlock()
		if err := r.deleteGroup(floorGroup); err != nil {
			r.mu.Lock()
			r.err = err
			r.mu.Unlock()
		}
	}
}

// flush waits until every link kicked so far is deleted.
func (r *reaper) flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.running || r.pending {
		r.cond.Wait()
	}
	err := r.err
	r.err = nil
	return err
}

// deleteGroup deletes every link of group with one RTM_DELLINK (a netlink
// socket acts in the namespace it was made in).
func (r *reaper) deleteGroup(group uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: r.sock}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(group)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	if errors.Is(err, unix.ENODEV) {
		return nil
	}
	return err
}

// endpointRetired is vxbridge's kernel work for one endpoint: create the
// pair up on the bridge, retire it to the reaper.
func (k *kernelAnchor) endpointRetired(r *reaper, tm timer) error {
	k.seq++
	name := fmt.Sprintf("vxbh%d-%d", k.id, k.seq)
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: k.br.Attrs().Index, Flags: net.FlagUp},
		PeerName: fmt.Sprintf("vxbp%d-%d", k.id, k.seq)}
	start := time.Now()
	if err := k.nlh.LinkAdd(v); err != nil {
		return fmt.Errorf("veth add %s: %w", name, err)
	}
	tm("veth add (up, on bridge)", time.Since(start))
	start = time.Now()
	if err := k.nlh.LinkSetGroup(v, floorGroup); err != nil {
		return fmt.Errorf("retire %s: %w", name, err)
	}
	tm("retire (set group)", time.Since(start))
	r.kick()
	return nil
}

// timeFloor runs total retired endpoints over the anchors, each in its own
// goroutine. The rate counts until the last veth is created (the reaper's
// backlog then is not charged to it: a floor on the generous side); the
// machine's CPU counts until the reaper has deleted them all.
func timeFloor(s *samples, ks []*kernelAnchor, r *reaper, total int) error {
	ops := make([]func() error, len(ks))
	for i, k := range ks {
		ops[i] = func() error { return k.endpointRetired(r, s.record) }
	}
	busy0 := machineBusy()
	timeBatch(s, ops, total)
	err := r.flush()
	s.machineCPU += machineBusy() - busy0
	return err
}

// machineBusy is the CPU time the whole machine has spent working (all
// CPUs, every process and the kernel's own threads and interrupts), from the
// first line of /proc/stat.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	// user nice system idle iowait irq softirq steal ...: idle, iowait and
	// steal (time the hypervisor gave to other machines) are not work done
	// here; guest time is already counted in user.
	for i, s := range f[1:min(len(f), 9)] {
		if i == 3 || i == 4 || i == 7 {
			continue
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/stat: 100 on every Linux ABI
// Go supports.
const clockTicks = 100
