package bench

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vxbridge/vxbridge/internal/netdev"
)

// The kernel floor of figure 2: an endpoint's kernel work done the way
// vxbridge does it, with nothing else: the veth pair created up and on the
// bridge (through the netlink package: create, look up, enslave, where
// vxbridge creates enslaved and then sets the port flags, alias and group in
// a second request; the same count of requests), moved into an interface
// group, and vxbridge's own reaper (netdev.Reaper, as bridge.RetireLink uses
// it) deleting that group in batches. Its rate is the most lifecycles per
// second this machine's kernel allows a plugin that makes a veth per
// endpoint, whatever the plugin does besides; its CPU is what the kernel
// charges per veth, background deletion included.

// floorGroup is the bench's own interface group: the plugin in the same
// namespace deletes only its own groups.
const floorGroup = 0x62656e63 // "benc"

// newReaper returns a reaper of floorGroup working in the namespace at
// nsPath.
func newReaper(t testing.TB, nsPath string) *netdev.Reaper {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	sock, err := netdev.Socket(ns)
	if err != nil {
		t.Fatalf("reaper: %v", err)
	}
	t.Cleanup(sock.Close)
	return netdev.NewReaper(sock, floorGroup, nil)
}

// endpointRetired is vxbridge's kernel work for one endpoint: create the
// pair up on the bridge, retire it to the reaper.
func (k *kernelAnchor) endpointRetired(r *netdev.Reaper, tm timer) error {
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
	r.Kick()
	return nil
}

// timeFloor runs total retired endpoints over the anchors, each in its own
// goroutine. The rate counts until the last veth is created (the reaper's
// backlog then is not charged to it: a floor on the generous side); the
// machine's CPU counts until the reaper has deleted them all.
func timeFloor(s *samples, ks []*kernelAnchor, r *netdev.Reaper, total int) error {
	ops := make([]func() error, len(ks))
	for i, k := range ks {
		ops[i] = func() error { return k.endpointRetired(r, s.record) }
	}
	busy0 := machineBusy()
	timeBatch(s, ops, total)
	err := r.Flush()
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
