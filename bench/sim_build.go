package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vxbridge/vxbridge/bench/result"
)

// simDesign is one build measured by figure 6: the plugin and the synthetic
// hosts of the same source, so both speak the same key layout.
type simDesign struct {
	result.SimDesign
	plugin   string // binary paths
	simhosts string
	args     []string // the observers' extra plugin flags
	// onDemand: the observers program peers only when the kernel misses
	// them, so convergence and re-lists are not seen in their tables.
	onDemand bool
}

// Design names.
const (
	designCurrent  = "current"
	designOnDemand = "on-demand"
	designBefore   = "before"
)

// currentDesign is the checkout: the plugin `make build` made, and the
// synthetic hosts built from this module now.
func currentDesign(t testing.TB, plugin string) simDesign {
	t.Helper()
	plugin = pluginBinary(t, plugin)
	out := filepath.Join(t.TempDir(), "simhosts")
	if msg, err := goBuild(".", out, "./simhosts"); err != nil {
		t.Fatalf("build simhosts: %v\n%s", err, msg)
	}
	return simDesign{SimDesign: result.SimDesign{Name: designCurrent, What: "this checkout"}, plugin: plugin, simhosts: out}
}

// onDemandDesign is the checkout with --peer-programming=on-demand.
func onDemandDesign(cur simDesign) simDesign {
	cur.SimDesign = result.SimDesign{Name: designOnDemand, What: "this checkout, --peer-programming=on-demand"}
	cur.args, cur.onDemand = []string{"--peer-programming=on-demand"}, true
	return cur
}

// designAt builds the plugin and the synthetic hosts of commit, once: the
// source (git archive, so the repository gets no worktree to prune) and
// both binaries stay in cache/<full hash>, and a later run reuses them.
func designAt(t testing.TB, name, commit, cache string) simDesign {
	t.Helper()
	hash, err := runIn("..", time.Minute, "git", "rev-parse", "--verify", commit+"^{commit}")
	if err != nil {
		t.Fatalf("%s commit %q: %v: %s", name, commit, err, hash)
	}
	hash = strings.TrimSpace(hash)
	dir := filepath.Join(cache, hash)
	d := simDesign{SimDesign: result.SimDesign{Name: name, Commit: hash, What: "built from commit " + hash[:12]},
		plugin: filepath.Join(dir, "vxbridge"), simhosts: filepath.Join(dir, "simhosts")}
	if fileExists(d.plugin) && fileExists(d.simhosts) {
		t.Logf("%s: reusing the build of %s in %s", name, hash[:12], dir)
		return d
	}
	start := time.Now()
	if err := buildCommit(hash, dir); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Logf("%s: built %s in %s (%v)", name, hash[:12], dir, time.Since(start).Round(time.Second))
	return d
}

// buildCommit extracts commit into dir/src and builds dir/vxbridge and
// dir/simhosts, in a scratch directory renamed into place at the end so a
// failed build leaves nothing that looks done.
func buildCommit(hash, dir string) error {
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	src := filepath.Join(tmp, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	archive := fmt.Sprintf("git -C .. archive --format=tar %s | tar -x -C %s", hash, src)
	if out, err := runIn(".", time.Minute, "sh", "-c", archive); err != nil {
		return fmt.Errorf("extract %s: %w: %s", hash, err, out)
	}
	if !fileExists(filepath.Join(src, "bench", "simhosts", "main.go")) {
		return fmt.Errorf("commit %s has no bench/simhosts: pin a commit that has the simulation (at or after its merge)", hash[:12])
	}
	if out, err := goBuild(src, filepath.Join(tmp, "vxbridge"), "."); err != nil {
		return fmt.Errorf("build the plugin of %s: %w\n%s", hash[:12], err, out)
	}
	if out, err := goBuild(filepath.Join(src, "bench"), filepath.Join(tmp, "simhosts"), "./simhosts"); err != nil {
		return fmt.Errorf("build simhosts of %s: %w\n%s", hash[:12], err, out)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// goBuild builds pkg in dir as `make build` builds the plugin (static,
// trimmed paths).
func goBuild(dir, out, pkg string) (string, error) {
	return runEnvIn(dir, 10*time.Minute, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-o", out, pkg)
}

// runIn runs a command in dir, killed after timeout, and returns its
// combined output.
func runIn(dir string, timeout time.Duration, name string, args ...string) (string, error) {
	return runEnvIn(dir, timeout, nil, name, args...)
}

func runEnvIn(dir string, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	b, err := cmd.CombinedOutput()
	return string(b), err
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
