package testbed

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/internal/testutil/nstest"
)

// A daemon outlives the thread that asked for it: Pdeathsig follows the
// forking thread, and Go retires a thread whose goroutine ends locked to
// it (the e2e tests' namespace hops do that all the time).
func TestProcessOutlivesTheStartingThread(t *testing.T) {
	nstest.RequireRoot(t)
	// Three rounds: Go keeps the main thread (wedged, not ended) when a
	// goroutine ends locked to it, so one round may prove nothing.
	for range 3 {
		log := filepath.Join(t.TempDir(), "sleep.log")
		got := make(chan *Process, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			p, err := startProcess("sleep", log, []string{"sleep", "30"}, []string{"sleep", "30"}, os.Environ())
			if err != nil {
				t.Error(err)
			}
			got <- p
		}()
		p := <-got
		if p == nil {
			return
		}
		t.Cleanup(func() { _ = p.cmd.Process.Kill(); <-p.Done() })
		select {
		case <-p.Done():
			t.Fatalf("the daemon died with the thread that started it: %v", p.ExitErr())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
