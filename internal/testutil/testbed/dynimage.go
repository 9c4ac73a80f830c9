package testbed

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// AddDynamic adds a dynamically linked program of this machine (iperf3) to
// spec.Files at dst, with every library `ldd` lists for it (the loader
// included) at the same path in the image, so it runs inside a container of
// the busybox image. Call it before ImportImageSpec.
func AddDynamic(t testing.TB, spec *ImageSpec, dst, program string) {
	t.Helper()
	bin, err := lookPath(program)
	if err != nil {
		t.Fatal(err)
	}
	libs, err := lddPaths(bin)
	if err != nil {
		t.Fatalf("image: %v", err)
	}
	if spec.Files == nil {
		spec.Files = map[string]string{}
	}
	spec.Files[dst] = bin
	for _, l := range libs {
		spec.Files[l] = l
	}
}

// lddPaths lists the absolute library paths `ldd bin` prints.
func lddPaths(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w: %s", bin, err, out)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2]) // libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0]) // /lib64/ld-linux-x86-64.so.2 (0x...)
		}
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s lists no library: %s", bin, out)
	}
	return libs, nil
}
