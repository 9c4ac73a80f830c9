package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// populate writes n networks, big enough that the networks bucket spans
// branch and leaf pages.
func populate(t *testing.T, db *DB, prefix string, n int) {
	t.Helper()
	for i := range n {
		nw := &Network{ID: fmt.Sprintf("%s%03d", prefix, i), Bridge: "vxb-x",
			Options: map[string]string{"pad": strings.Repeat("p", 200)}}
		if err := db.SaveNetwork(nw); err != nil {
			t.Fatal(err)
		}
	}
}

func networkIDs(t *testing.T, db *DB) []string {
	t.Helper()
	nets, err := db.Networks()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range nets {
		ids = append(ids, n.ID)
	}
	return ids
}

// treePages lists the pages reachable from the current meta page, as
// bbolt would read them: the pages damage must hit to matter.
func treePages(t *testing.T, path string) (pages []uint64, pageSize int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := chooseMeta(data)
	if err != nil {
		t.Fatal(err)
	}
	w := &walker{data: data, m: m, seen: map[uint64]bool{0: true, 1: true}}
	if _, err := w.tree(m.root, 0, keyRange{}); err != nil {
		t.Fatal(err)
	}
	for id := range w.seen {
		if id > 1 {
			pages = append(pages, id)
		}
	}
	slices.Sort(pages)
	return pages, m.pageSize
}

// damage rewrites the file at path with change applied to its bytes.
func damage(t *testing.T, path string, change func(data []byte, pages []uint64, pageSize int) []byte) {
	t.Helper()
	pages, ps := treePages(t, path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, change(data, pages, ps), 0o600); err != nil {
		t.Fatal(err)
	}
}

// newerMeta is the meta page holding the last commit.
func newerMeta(t *testing.T, data []byte) meta {
	t.Helper()
	m, notes, err := chooseMeta(data)
	if err != nil || len(notes) > 0 {
		t.Fatalf("meta pages before the damage: %v %v", err, notes)
	}
	return m
}

var damages = map[string]func(data []byte, pages []uint64, ps int) []byte{
	"truncated to half":     func(data []byte, _ []uint64, _ int) []byte { return data[:len(data)/2] },
	"truncated to one page": func(data []byte, _ []uint64, ps int) []byte { return data[:ps] },
	"a tree page zeroed": func(data []byte, pages []uint64, ps int) []byte {
		id := pages[len(pages)/2]
		clear(data[int(id)*ps : int(id+1)*ps])
		return data
	},
	"bits flipped in a page header": func(data []byte, pages []uint64, ps int) []byte {
		data[int(pages[len(pages)-1])*ps+1] ^= 0x5a // the page's own id
		return data
	},
	"bits flipped in an element header": func(data []byte, pages []uint64, ps int) []byte {
		off := int(pages[0])*ps + pageHeaderSize + 6 // first element's pos or ksize
		data[off] ^= 0xff
		data[off+1] ^= 0x7f
		return data
	},
	"both meta pages overwritten": func(data []byte, _ []uint64, ps int) []byte {
		copy(data[20:], "garbage!")
		copy(data[ps+20:], "garbage!")
		return data
	},
}

// Every kind of damage is refused before bbolt reads the file, with an
// error naming the file and the cause and wrapping ErrDamaged: no panic, no
// fault (either would end this test binary). Restore then brings back the
// records of the last good copy, and the file says it went back in time.
func TestDamagedFileRefusedAndRestored(t *testing.T) {
	for name, change := range damages {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			db := open(t, dir)
			populate(t, db, "good", 60)
			if err := db.SaveGoodCopy(); err != nil {
				t.Fatal(err)
			}
			populate(t, db, "late", 5) // after the copy: lost by the restore
			db.Close()
			path := filepath.Join(dir, FileName)
			damage(t, path, change)

			_, err := Open(dir, Options{})
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), GoodSuffix) {
				t.Fatalf("Open of a damaged file: %v; want ErrDamaged naming the file and its good copy", err)
			}
			t.Logf("%s: %v", name, err)

			got, err := Restore(dir, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got.Kept == "" || got.From.Records != 60 {
				t.Errorf("restore = %+v", got)
			}
			if _, err := os.Stat(got.Kept); err != nil {
				t.Errorf("the damaged file was not kept: %v", err)
			}
			db = open(t, dir)
			defer db.Close()
			if ids := networkIDs(t, db); len(ids) != 60 || ids[0] != "good000" {
				t.Errorf("after restore: %d networks %v", len(ids), ids)
			}
			if o := db.Origin(); !strings.Contains(o.Rollback, "restored from the good copy") {
				t.Errorf("origin after restore = %+v, want the rollback recorded", o)
			}
		})
	}
}

// The newer meta page damaged: bbolt silently reads the commit before. Open
// says so (Notes), finds the rollback against the commit mark, and keeps it
// known across restarts until it is accepted.
func TestMetaRollbackDetected(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	populate(t, db, "a", 3)
	if err := db.SaveNetwork(&Network{ID: "last"}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	path := filepath.Join(dir, FileName)
	damage(t, path, func(data []byte, _ []uint64, ps int) []byte {
		m := newerMeta(t, data)
		data[m.page*ps+pageHeaderSize+40] ^= 0x01 // its high-water mark: the checksum no longer matches
		return data
	})

	db = open(t, dir)
	o := db.Origin()
	if n, _ := db.Network("last"); n != nil {
		t.Fatal("the last commit survived a damaged meta page: the damage missed")
	}
	if o.Rollback == "" || len(o.Notes) != 1 || !strings.Contains(o.Notes[0], "is damaged") {
		t.Fatalf("origin = %+v, want the rollback and a note on the meta page", o)
	}
	if err := db.SaveGoodCopy(); err == nil {
		t.Error("a good copy was written from a rolled-back file")
	}
	db.Close()

	db = open(t, dir) // the meta page is healed by now; the rollback stays known
	if db.Origin().Rollback != o.Rollback {
		t.Errorf("second open: rollback %q, want %q", db.Origin().Rollback, o.Rollback)
	}
	if err := db.AcceptRollback(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = open(t, dir)
	defer db.Close()
	if r := db.Origin().Rollback; r != "" {
		t.Errorf("after AcceptRollback: %q", r)
	}
}

// An older copy of the same state put in place is a rollback too; a clean
// reopen is not.
func TestOlderCopyIsARollback(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	populate(t, db, "a", 2)
	db.Close()
	path := filepath.Join(dir, FileName)
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	db = open(t, dir)
	if o := db.Origin(); o.Rollback != "" || o.Created || o.Replaced != "" {
		t.Fatalf("plain reopen: %+v", o)
	}
	populate(t, db, "b", 2)
	db.Close()
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir)
	defer db.Close()
	if o := db.Origin(); !strings.Contains(o.Rollback, "older copy") {
		t.Errorf("older copy put back: origin %+v", o)
	}
}

func TestRestoreRefusesWithoutGoodCopyOrWhileRunning(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	if _, err := Restore(dir, 0); err == nil || !strings.Contains(err.Error(), GoodSuffix) {
		t.Errorf("restore without a good copy: %v", err)
	}
	if err := db.SaveGoodCopy(); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(dir, 0); !errors.Is(err, ErrLocked) {
		t.Errorf("restore while the state is open: %v, want ErrLocked", err)
	}
	db.Close()
}

// sampleFile is a state file of a few pages, for damaging.
func sampleFile(t testing.TB) []byte {
	dir := t.TempDir()
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if err := db.SaveNetwork(&Network{ID: fmt.Sprint("n", i), Options: map[string]string{"p": strings.Repeat("x", 300)}}); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	data, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// checkBytes reads what bbolt would fault on: it must never panic itself.
// Random damage, many times (the fuzz target below explores further).
func TestCheckBytesSurvivesRandomDamage(t *testing.T) {
	data := sampleFile(t)
	rng := rand.New(rand.NewPCG(1, 2))
	refused := 0
	for range 20000 {
		b := slices.Clone(data)
		for range 1 + rng.IntN(8) {
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
		}
		if rng.IntN(10) == 0 {
			b = b[:rng.IntN(len(b))]
		}
		if _, err := checkBytes(b); err != nil {
			refused++
		}
	}
	t.Logf("%d of 20000 damaged files refused (the others were hit where nothing is read)", refused)
}

// What the check accepts, bbolt opens and reads without a crash: the
// damage the check lets through (in values, in free pages) is either
// harmless or reported as an error (a record that does not decode, keys out
// of order). A crash here ends the test binary.
func TestCheckedFilesNeverCrashBbolt(t *testing.T) {
	data := sampleFile(t)
	rng := rand.New(rand.NewPCG(3, 4))
	opened, refused := 0, 0
	for opened+refused < 100 {
		b := slices.Clone(data)
		for range 1 + rng.IntN(8) {
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
		}
		if _, err := checkBytes(b); err != nil {
			continue
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, FileName), b, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := Open(dir, Options{})
		if err != nil {
			if !errors.Is(err, ErrDamaged) {
				t.Errorf("damaged file: %v, want ErrDamaged", err)
			}
			refused++
			continue
		}
		if _, err := db.Networks(); err != nil && !errors.Is(err, ErrDamaged) {
			t.Errorf("reading a damaged file: %v, want ErrDamaged", err)
		}
		db.Close()
		opened++
	}
	t.Logf("%d damaged files opened, %d refused by bbolt's own check", opened, refused)
}

func FuzzCheckBytes(f *testing.F) {
	data := sampleFile(f)
	f.Add(data)
	f.Add(data[:len(data)/3])
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = checkBytes(b) })
}
