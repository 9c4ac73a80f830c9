package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// procStat is what /proc says of a process at one moment.
type procStat struct {
	cpu    time.Duration // user+system CPU time so far
	rssKiB int
	fds    int
	// wait is how long its threads were runnable but waiting for a CPU
	// (the scheduler's run delay, summed over threads alive now): a busy
	// machine, not the process's own work.
	wait time.Duration
}

func readProcStat(pid int) (procStat, error) {
	cpu, err := procCPU(pid)
	if err != nil {
		return procStat{}, err
	}
	rss, err := vmRSS(pid)
	if err != nil {
		return procStat{}, err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return procStat{}, err
	}
	return procStat{cpu: cpu, rssKiB: rss, fds: len(fds), wait: runDelay(pid)}, nil
}

// runDelay sums the run-queue wait of pid's threads (/proc/PID/task/*/
// schedstat, second field, ns); 0 where the kernel does not keep it.
func runDelay(pid int) time.Duration {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread ended
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			if ns, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				sum += time.Duration(ns)
			}
		}
	}
	return sum
}

// procCPU is a process's user+system CPU time so far, from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat: %q", pid, s)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	// USER_HZ is 100 on every Linux architecture Go supports.
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
