package doctor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// doctor's iptables-save cannot hang doctor: an iptables-save that never
// ends (nf_tables hanging) is killed at saveTimeout and named (checked:
// without the deadline the test fails at its 3 s).
func TestIPTablesSaveTimesOut(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "iptables-save"), []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	defer func(d time.Duration) { saveTimeout = d }(saveTimeout)
	saveTimeout = 200 * time.Millisecond
	done := make(chan error, 1)
	go func() {
		_, err := iptablesSave(context.Background(), nil, "filter")
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "iptables-save -t filter: timed out after 200ms") {
			t.Errorf("iptablesSave: %v, want a timeout naming the command", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("iptablesSave still running after 3 s")
	}
}
