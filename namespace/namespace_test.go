package namespace

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Pure tier: names and listing, no root, no mounts.

func TestValidName(t *testing.T) {
	for _, name := range []string{"a", "vxb-0123456789ab", strings.Repeat("n", maxNameLen), "a.b", "-", "..."} {
		if err := validName(name); err != nil {
			t.Errorf("validName(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"", ".", "..", "a/b", "/", "../x", "a\x00b", strings.Repeat("n", maxNameLen+1)} {
		err := validName(name)
		if err == nil {
			t.Errorf("validName(%q) = nil, want an error", name)
			continue
		}
		if name != "" && !strings.Contains(err.Error(), fmt.Sprintf("%q", name)) {
			t.Errorf("validName(%q) = %q, want the name in the error", name, err)
		}
	}
}

func TestList(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	for _, n := range []string{"vxb-b", "other", "vxb-a", "vxb-c"} {
		if err := os.WriteFile(filepath.Join(d.Path, n), nil, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"vxb-", []string{"vxb-a", "vxb-b", "vxb-c"}},
		{"", []string{"other", "vxb-a", "vxb-b", "vxb-c"}},
		{"vxb-b", []string{"vxb-b"}},
		{"none", nil},
	} {
		got, err := d.List(tc.prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", tc.prefix, err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("List(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}
}

func TestListMissingDir(t *testing.T) {
	d := Dir{Path: filepath.Join(t.TempDir(), "missing")}
	got, err := d.List("")
	if err != nil || len(got) != 0 {
		t.Fatalf("List on a missing directory = %q, %v; want empty, nil", got, err)
	}
}
