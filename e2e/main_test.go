// Package e2e runs vxbridge against real Docker daemons, each in a network
// namespace of its own (see internal/testutil/testbed). It needs root; `go test
// -short` skips it.
//
//	sudo go test ./e2e/ -count=1 -v
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vxbridge/vxbridge/internal/testutil/testbed"
)

// pluginBin is the vxbridge binary built by TestMain, or "" with
// pluginBuildErr saying why not.
var (
	pluginBin      string
	pluginBuildErr string
)

func TestMain(m *testing.M) {
	if isFakePlugin() {
		serveFakePlugin()
		return
	}
	flag.Parse()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if os.Geteuid() == 0 && !testing.Short() {
		dir, err := os.MkdirTemp("", "vxbridge-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		pluginBin, pluginBuildErr = buildPlugin(filepath.Join(dir, "vxbridge"))
	}
	code := m.Run()
	if left := testbed.Leftovers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: left behind by the tests:\n  %s\n", strings.Join(left, "\n  "))
		if code == 0 {
			code = 1
		}
	}
	return code
}

// buildPlugin builds the module's main package once for all tests.
func buildPlugin(out string) (bin, failure string) {
	goBin, err := testbed.GoTool()
	if err != nil {
		return "", err.Error()
	}
	cmd := exec.Command(goBin, "build", "-o", out, "github.com/vxbridge/vxbridge")
	cmd.Dir = ".." // the module root: e2e/ is one level down
	b, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Sprintf("go build github.com/vxbridge/vxbridge: %v\n%s", err, strings.TrimSpace(string(b)))
	}
	return out, ""
}

// requireE2E skips unless the end-to-end tier can run here, and installs
// what it needs.
func requireE2E(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end tier: skipped with -short (it starts real dockerd instances)")
	}
	testbed.RequireRoot(t)
	testbed.EnsurePackages(t)
}

// requirePlugin is requireE2E plus a built plugin binary.
func requirePlugin(t *testing.T) {
	t.Helper()
	requireE2E(t)
	if pluginBin == "" {
		t.Skipf("vxbridge plugin binary did not build, skipping plugin scenarios:\n%s", pluginBuildErr)
	}
}
