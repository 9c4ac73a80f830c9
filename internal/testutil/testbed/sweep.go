package testbed

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procIdent names a process across pid reuse: pid plus start time.
type procIdent struct {
	pid   int
	start uint64 // field 22 of /proc/PID/stat, clock ticks since boot
}

// identify reads the identity of a running pid.
func identify(pid int) (procIdent, error) {
	st, err := readStat(pid)
	if err != nil {
		return procIdent{}, err
	}
	return procIdent{pid: pid, start: st.start}, nil
}

type procStat struct {
	comm  string
	state byte
	start uint64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	// comm may hold spaces and parentheses: it ends at the last ')'.
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("pid %d: malformed stat", pid)
	}
	fields := strings.Fields(s[end+1:]) // fields[0] is field 3 (state)
	if len(fields) < 20 {
		return procStat{}, fmt.Errorf("pid %d: short stat", pid)
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return procStat{}, err
	}
	return procStat{comm: s[open+1 : end], state: fields[0][0], start: start}, nil
}

// running reports whether the process still exists and is not a zombie
// (a zombie is dead; reaping it is its parent's business).
func (id procIdent) running() bool {
	st, err := readStat(id.pid)
	return err == nil && st.start == id.start && st.state != 'Z'
}

// allPids lists the pids in /proc.
func allPids() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pidsInNetNS lists the live processes whose network namespace is inode.
func pidsInNetNS(inode uint64) []int {
	want := fmt.Sprintf("net:[%d]", inode)
	self := os.Getpid()
	var pids []int
	for _, pid := range allPids() {
		if pid == self {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && l == want {
			if st, err := readStat(pid); err == nil && st.state != 'Z' {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// cgroupDirs finds the directories named name at the top of every mounted
// cgroup hierarchy (v1 controllers, v2, hybrid): where dockerd's
// --cgroup-parent /NAME puts containers.
func cgroupDirs(name string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "36 35 98:0 / /mnt rw - cgroup2 cgroup2 rw": fstype after " - ".
		line := sc.Text()
		left, right, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		lf, rf := strings.Fields(left), strings.Fields(right)
		if len(lf) < 5 || len(rf) < 1 || (rf[0] != "cgroup" && rf[0] != "cgroup2") {
			continue
		}
		d := filepath.Join(unescapeMount(lf[4]), name)
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// pidsInCgroups lists the processes in the cgroup trees under dirs.
func pidsInCgroups(dirs []string) []int {
	seen := map[int]bool{}
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil || !e.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	pids := make([]int, 0, len(seen))
	for pid := range seen {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	return pids
}

// removeCgroups removes the (emptied) cgroup trees, deepest first.
func removeCgroups(dirs []string) error {
	var errs []string
	for _, d := range dirs {
		var all []string
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				all = append(all, p)
			}
			return nil
		})
		for i := len(all) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(all[i]); err != nil && err != syscall.ENOENT {
				errs = append(errs, fmt.Sprintf("rmdir %s: %v", all[i], err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// killAll SIGKILLs what list returns until it returns nothing or the time is
// up; it reports what it killed. list must only return processes the
// testbed started (inside its namespaces or cgroups).
func killAll(list func() []int, timeout time.Duration) (killed []string) {
	deadline := time.Now().Add(timeout)
	reported := map[int]bool{}
	for {
		pids := list()
		if len(pids) == 0 || time.Now().After(deadline) {
			return killed
		}
		for _, pid := range pids {
			if !reported[pid] {
				reported[pid] = true
				killed = append(killed, describe(pid))
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func describe(pid int) string {
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	s := strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return fmt.Sprintf("%d %s", pid, s)
}

// unmountUnder lazily unmounts whatever is mounted under dir in our mount
// namespace. The testbed mounts only in private mount namespaces that die
// with their processes; this guards against a test that mounted by hand.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var mps []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mps = append(mps, mp)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mps))) // children first
	var errs []string
	for _, mp := range mps {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && err != syscall.EINVAL {
			errs = append(errs, fmt.Sprintf("umount %s: %v", mp, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// Footprint is what the testbed made for one host or namespace, to check
// after cleanup that nothing of it is left.
type Footprint struct {
	mu        sync.Mutex
	NetNS     []*NetNS
	Dirs      []string
	CgroupDir string // the name under each cgroup hierarchy root
	procs     []procIdent
}

func (f *Footprint) addProc(id procIdent) {
	if id.pid == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.procs = append(f.procs, id)
}

// Leftovers describes what of the footprint still exists: namespaces,
// processes (those the testbed started and any still inside its
// namespaces), directories, cgroups. Empty means all gone.
func (f *Footprint) Leftovers() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var left []string
	for _, n := range f.NetNS {
		if _, err := os.Lstat(n.Path()); err == nil {
			left = append(left, "network namespace "+n.Name)
		}
		for _, pid := range n.pids() {
			left = append(left, fmt.Sprintf("process in namespace %s: %s", n.Name, describe(pid)))
		}
	}
	for _, p := range f.procs {
		if p.running() {
			left = append(left, "process "+describe(p.pid))
		}
	}
	for _, d := range f.Dirs {
		if _, err := os.Lstat(d); err == nil {
			left = append(left, "directory "+d)
		}
	}
	if f.CgroupDir != "" {
		for _, d := range cgroupDirs(f.CgroupDir) {
			left = append(left, "cgroup "+d)
		}
	}
	return left
}

// registry holds every footprint of this test binary, for Leftovers.
var registry struct {
	sync.Mutex
	all []*Footprint
}

func track(f *Footprint) *Footprint {
	registry.Lock()
	defer registry.Unlock()
	registry.all = append(registry.all, f)
	return f
}

// Leftovers is Footprint.Leftovers over everything this test binary made.
// Call it from TestMain after m.Run.
func Leftovers() []string {
	registry.Lock()
	all := append([]*Footprint(nil), registry.all...)
	registry.Unlock()
	var left []string
	for _, f := range all {
		left = append(left, f.Leftovers()...)
	}
	return left
}
