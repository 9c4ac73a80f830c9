package testbed

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// Image is the test image every host can import: static busybox only.
const Image = "vxtest/busybox:latest"

// Applets are the busybox commands linked in /bin of the test image.
// Debian's busybox-static wget crashes (exit 139) fetching by IP inside the
// image and its nc has no UDP mode: speak HTTP with `printf ... | nc`, and
// add a static tool through ImageSpec.Files for UDP.
var Applets = []string{"sh", "ip", "ping", "ping6", "nc", "sleep", "cat", "ls", "hostname",
	"ifconfig", "route", "wget", "true", "echo", "printf", "grep", "ps", "kill", "nslookup"}

// ImageSpec describes an image built from busybox plus extra static files.
type ImageSpec struct {
	Tag string
	// Files maps a path in the image ("/bin/udptool") to a file on this
	// machine; they are copied with mode 0755. They must be static: the
	// image has no libraries (see BuildStaticGo).
	Files map[string]string
}

// ImportImage builds Image (once per host) with `docker import`.
func (h *Host) ImportImage(t testing.TB) {
	t.Helper()
	h.ImportImageSpec(t, ImageSpec{Tag: Image})
}

// ImportImageSpec builds and imports an image, once per host and tag.
func (h *Host) ImportImageSpec(t testing.TB, spec ImageSpec) {
	t.Helper()
	h.mu.Lock()
	done := h.images[spec.Tag]
	h.mu.Unlock()
	if done {
		return
	}
	start := time.Now()
	rootfs, err := imageTar(spec)
	if err != nil {
		t.Fatalf("build image %s: %v", spec.Tag, err)
	}
	out, err := h.dockerTimeout(DockerTimeout, bytes.NewReader(rootfs), "import", "-", spec.Tag)
	if err != nil {
		t.Fatalf("%s: docker import %s: %v\n%s", h.Name, spec.Tag, err, out)
	}
	h.mu.Lock()
	h.images[spec.Tag] = true
	h.mu.Unlock()
	t.Logf("%s: imported %s in %v", h.Name, spec.Tag, time.Since(start).Round(time.Millisecond))
}

// imageTar is the image's root filesystem as a tar stream: /bin/busybox,
// applet symlinks, the extra files, and empty /tmp, /etc, /proc, /sys, /dev.
func imageTar(spec ImageSpec) ([]byte, error) {
	bb, err := lookPath("busybox")
	if err != nil {
		return nil, err
	}
	if err := requireStatic(bb); err != nil {
		return nil, fmt.Errorf("%w: install busybox-static", err)
	}
	if err := checkApplets(bb); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: now})
	}
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "root", "var", "usr", "usr/bin"} {
		if err := dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := dir("tmp", 0o1777); err != nil {
		return nil, err
	}
	if err := addFile(tw, "bin/busybox", bb, now); err != nil {
		return nil, err
	}
	for _, a := range Applets {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a,
			Linkname: "busybox", Mode: 0o777, ModTime: now}); err != nil {
			return nil, err
		}
	}
	dsts := make([]string, 0, len(spec.Files))
	for dst := range spec.Files {
		dsts = append(dsts, dst)
	}
	sort.Strings(dsts)
	made := map[string]bool{"bin": true, "usr": true, "usr/bin": true, "etc": true, "tmp": true}
	for _, dst := range dsts {
		name := strings.TrimPrefix(path.Clean("/"+dst), "/")
		var parents []string
		for d := path.Dir(name); d != "." && !made[d]; d = path.Dir(d) {
			made[d] = true
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if err := dir(d, 0o755); err != nil {
				return nil, err
			}
		}
		if err := addFile(tw, name, spec.Files[dst], now); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func addFile(tw *tar.Writer, name, src string, now time.Time) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755,
		Size: st.Size(), ModTime: now}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

// checkApplets fails naming the applets this busybox lacks.
func checkApplets(bb string) error {
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return fmt.Errorf("%s --list: %w", bb, err)
	}
	have := map[string]bool{}
	for _, a := range strings.Fields(string(out)) {
		have[a] = true
	}
	var missing []string
	for _, a := range Applets {
		if !have[a] {
			missing = append(missing, a)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s lacks applets %s", bb, strings.Join(missing, " "))
	}
	return nil
}

// BuildStaticGo builds a Go main package (an import path or a directory) as
// a static binary for an image (CGO_ENABLED=0) and returns its path.
func BuildStaticGo(t testing.TB, pkg string) string {
	t.Helper()
	goBin, err := GoTool()
	if err != nil {
		t.Fatalf("go toolchain: %v", err)
	}
	out := filepath.Join(t.TempDir(), path.Base(pkg))
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := runTimeout(cmd, 5*time.Minute); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// GoTool finds the go command: in PATH, else in the GOROOT this test was
// built with (`sudo` often drops /usr/local/go/bin from PATH).
func GoTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if root := runtime.GOROOT(); root != "" { //nolint:staticcheck // the test binary's own toolchain
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("go command not found in PATH or GOROOT")
}
