//go:build crashhook

package main

// The crash hook of test builds (`go build -tags crashhook`): issue 7's fault
// suite kills the plugin at each named step of an API call (driver.CrashPoints,
// ipam.CrashPoints) to prove a restart converges. Release builds compile
// main_crashhook_off.go instead: no hook, and this variable is never read.

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/ipam"
)

// crashAtEnv names the point to die at: <point>[@<n>], the n-th time the
// point is reached (default the first).
const crashAtEnv = "VXBRIDGE_CRASH_AT"

// crashHook returns the hook VXBRIDGE_CRASH_AT asks for, nil when it is
// unset. At its point the hook writes one line to stderr (tests assert it)
// and kills the process with SIGKILL: no deferred function, no graceful
// shutdown, as with `kill -9`.
func crashHook(stderr io.Writer) (func(point string), error) {
	spec, ok := os.LookupEnv(crashAtEnv)
	if !ok || spec == "" {
		return nil, nil
	}
	point, nth, err := parseCrashAt(spec)
	if err != nil {
		return nil, err
	}
	var hits atomic.Int64
	return func(p string) {
		if p != point || hits.Add(1) != nth {
			return
		}
		fmt.Fprintf(stderr, "vxbridge: crash hook: pid %d killed at %s (hit %d, %s=%s)\n", os.Getpid(), p, nth, crashAtEnv, spec)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		for { // SIGKILL is on its way: this call must not return meanwhile
			time.Sleep(time.Hour)
		}
	}, nil
}

// parseCrashAt reads <point>[@<n>]; the point must be one the driver or the
// IPAM has, so a typo fails the start instead of never firing.
func parseCrashAt(spec string) (point string, nth int64, err error) {
	point, count, hasCount := strings.Cut(spec, "@")
	nth = 1
	if hasCount {
		if nth, err = strconv.ParseInt(count, 10, 64); err != nil || nth < 1 {
			return "", 0, fmt.Errorf("%s=%q: the count after @ must be a positive integer", crashAtEnv, spec)
		}
	}
	if !slices.Contains(driver.CrashPoints, point) && !slices.Contains(ipam.CrashPoints, point) {
		return "", 0, fmt.Errorf("%s=%q: unknown crash point %q: want one of %s", crashAtEnv, spec, point,
			strings.Join(append(slices.Clone(driver.CrashPoints), ipam.CrashPoints...), ", "))
	}
	return point, nth, nil
}
