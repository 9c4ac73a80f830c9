package cluster

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLoadHostID(t *testing.T) {
	dir := t.TempDir()
	id, err := LoadHostID(dir)
	if err != nil || len(id) != 16 {
		t.Fatalf("new id %q, %v", id, err)
	}
	again, err := LoadHostID(dir)
	if err != nil || again != id {
		t.Fatalf("id not kept: %q then %q (%v)", id, again, err)
	}
	other, _ := LoadHostID(t.TempDir())
	if other == id {
		t.Fatal("two state dirs, one id")
	}
	if err := os.WriteFile(filepath.Join(dir, HostIDFile), []byte("a/b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadHostID(dir); err == nil {
		t.Fatal("malformed id accepted")
	}
}
