package store

// Checking the file before bbolt sees it.
//
// bbolt maps the file into memory and trusts what it reads there: a file cut
// short faults the process when a page past its end is touched (SIGBUS,
// "fatal error: fault", which recover cannot catch), and a page that is not
// what its parent says panics with an assertion ("Page expected to be: 40,
// but self identifies as 0"). Worse, Open itself walks every page (without
// a freelist on disk it rebuilds the list by walking the tree) on a
// goroutine of its own, where no recover of ours reaches. So the walk is done
// here first, with ReadAt and bounds-checked slices: every page the tree
// references must lie below the high-water mark and inside the file, name
// itself, be a branch or a leaf, and hold its elements within its bytes.
// What passes cannot fault bbolt's own walk.
//
// The on-disk format read here is bbolt's version 2 (go.etcd.io/bbolt
// internal/common): a 16-byte page header {id u64, flags u16, count u16,
// overflow u32}; meta pages 0 and 1 {magic, version, pageSize, flags u32,
// root {pgid, sequence u64}, freelist, pgid, txid, checksum u64}, the
// checksum being FNV-64a of the fields before it; branch elements {pos,
// ksize u32, pgid u64} and leaf elements {flags, pos, ksize, vsize u32},
// pos counted from the element itself; a bucket value {root, sequence u64}
// followed, when root is 0, by an inline leaf page. Native byte order, as
// bbolt writes it.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
)

// ErrDamaged classifies a state file that cannot be read safely: cut short,
// overwritten or with broken pages. The error names the file and the cause.
var ErrDamaged = errors.New("state file is damaged")

const (
	pageHeaderSize = 16
	elementSize    = 16 // branch and leaf elements alike
	bucketHeader   = 16 // {root, sequence}
	metaSize       = 64 // up to and including the checksum

	metaMagic   = 0xED0CDAED
	metaVersion = 2
	noFreelist  = ^uint64(0)

	flagBranch   = 0x01
	flagLeaf     = 0x02
	flagMeta     = 0x04
	flagFreelist = 0x10
	leafIsBucket = 0x01

	maxDepth = 64 // far deeper than any real tree; a cycle ends here
)

var native = binary.NativeEndian

// meta is one valid meta page.
type meta struct {
	page     int // 0 or 1
	pageSize int
	root     uint64
	freelist uint64
	hwm      uint64 // pgid: pages [0, hwm) are in use
	txid     uint64
}

// parseMeta reads the meta page whose header starts at b.
func parseMeta(b []byte, page int) (meta, error) {
	if len(b) < pageHeaderSize+metaSize {
		return meta{}, errors.New("cut short")
	}
	m := b[pageHeaderSize:]
	switch {
	case native.Uint32(m[0:]) != metaMagic:
		return meta{}, errors.New("not a bbolt meta page (bad magic)")
	case native.Uint32(m[4:]) != metaVersion:
		return meta{}, fmt.Errorf("bbolt format version %d, want %d", native.Uint32(m[4:]), metaVersion)
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != native.Uint64(m[56:]) {
		return meta{}, errors.New("checksum mismatch")
	}
	out := meta{page: page, pageSize: int(native.Uint32(m[8:])), root: native.Uint64(m[16:]),
		freelist: native.Uint64(m[32:]), hwm: native.Uint64(m[40:]), txid: native.Uint64(m[48:])}
	if ps := out.pageSize; ps < 512 || ps > 1<<24 || ps&(ps-1) != 0 {
		return meta{}, fmt.Errorf("page size %d is not a power of two between 512 and 16 MiB", ps)
	}
	return out, nil
}

// fileCheck is what checkFile learnt.
type fileCheck struct {
	meta  meta     // the meta page bbolt will use
	notes []string // damage bbolt works around (a meta page it skips)
}

// checkFile reads the bbolt file at path and returns why bbolt must not
// open it (wrapping ErrDamaged), or what it found. The file must be
// non-empty; the caller holds its lock.
func checkFile(path string) (fileCheck, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return fileCheck{}, fmt.Errorf("read %s: %w", path, err)
	}
	fc, cause := checkBytes(data)
	if cause != nil {
		return fc, fmt.Errorf("%s: %w: %w", path, ErrDamaged, cause)
	}
	return fc, nil
}

// checkBytes is checkFile on the file's content.
func checkBytes(data []byte) (fileCheck, error) {
	var fc fileCheck
	m, notes, err := chooseMeta(data)
	fc.notes = notes
	if err != nil {
		return fc, err
	}
	fc.meta = m
	if m.hwm < 4 || m.hwm > uint64(len(data)/m.pageSize) {
		return fc, fmt.Errorf("the file is %d bytes but its commit %d uses %d pages of %d bytes: it was cut short",
			len(data), m.txid, m.hwm, m.pageSize)
	}
	w := &walker{data: data, m: m, seen: map[uint64]bool{0: true, 1: true}}
	if err := w.freelist(); err != nil {
		return fc, err
	}
	if _, err := w.tree(m.root, 0, keyRange{}); err != nil {
		return fc, fmt.Errorf("commit %d: %w", m.txid, err)
	}
	return fc, nil
}

// chooseMeta validates both meta pages and returns the one bbolt uses: the
// valid one with the higher transaction id.
func chooseMeta(data []byte) (meta, []string, error) {
	m0, err0 := parseMeta(data, 0)
	pageSize := m0.pageSize
	if err0 != nil {
		pageSize = secondMetaOffset(data)
	}
	var m1 meta
	err1 := errors.New("none found at any page size bbolt uses")
	if pageSize > 0 && pageSize < len(data) {
		m1, err1 = parseMeta(data[pageSize:], 1)
	}
	switch {
	case err0 != nil && err1 != nil:
		return meta{}, nil, fmt.Errorf("neither meta page is valid (page 0: %w; page 1: %w)", err0, err1)
	case err0 != nil:
		return m1, []string{fmt.Sprintf("meta page 0 is damaged (%v): bbolt reads commit %d of meta page 1", err0, m1.txid)}, nil
	case err1 != nil:
		return m0, []string{fmt.Sprintf("meta page 1 is damaged (%v): bbolt reads commit %d of meta page 0", err1, m0.txid)}, nil
	case m1.txid > m0.txid:
		return m1, nil, nil
	}
	return m0, nil, nil
}

// secondMetaOffset finds meta page 1 when page 0 cannot say the page size,
// trying the sizes bbolt tries (1 KiB to 16 MiB); 0 when none is valid.
func secondMetaOffset(data []byte) int {
	for i := 0; i <= 14; i++ {
		off := 1024 << i
		if off >= len(data) {
			break
		}
		if m, err := parseMeta(data[off:], 1); err == nil && m.pageSize == off {
			return off
		}
	}
	return 0
}

// walker visits the pages reachable from a meta page.
type walker struct {
	data []byte
	m    meta
	seen map[uint64]bool
}

// page returns the bytes of page id with its overflow pages, checking that
// it is in range, unreferenced so far and names itself.
func (w *walker) page(id uint64, what string) ([]byte, uint16, error) {
	ps := uint64(w.m.pageSize)
	if id < 2 || id >= w.m.hwm {
		return nil, 0, fmt.Errorf("%s refers to page %d, outside pages 2..%d", what, id, w.m.hwm-1)
	}
	if w.seen[id] {
		return nil, 0, fmt.Errorf("%s refers to page %d, which is referenced twice", what, id)
	}
	hdr := w.data[id*ps:]
	if self := native.Uint64(hdr); self != id {
		return nil, 0, fmt.Errorf("page %d (%s) identifies itself as page %d: it was overwritten", id, what, self)
	}
	overflow := uint64(native.Uint32(hdr[12:]))
	if id+overflow >= w.m.hwm {
		return nil, 0, fmt.Errorf("page %d (%s) runs %d pages past the last page %d", id, what, overflow, w.m.hwm-1)
	}
	for i := id; i <= id+overflow; i++ {
		w.seen[i] = true
	}
	return w.data[id*ps : (id+overflow+1)*ps], native.Uint16(hdr[8:]), nil
}

// freelist checks the freelist page of files written with one (older
// vxbridge); the current one keeps none on disk.
func (w *walker) freelist() error {
	if w.m.freelist == noFreelist {
		return nil
	}
	b, flags, err := w.page(w.m.freelist, "the freelist")
	if err != nil {
		return err
	}
	if flags != flagFreelist {
		return fmt.Errorf("freelist page %d has flags %#x", w.m.freelist, flags)
	}
	start, count := uint64(pageHeaderSize), uint64(native.Uint16(b[10:]))
	if count == 0xFFFF { // the count overflowed into the first element
		count, start = native.Uint64(b[pageHeaderSize:]), pageHeaderSize+8
	}
	if count > (uint64(len(b))-start)/8 {
		return fmt.Errorf("freelist page %d lists %d pages, more than it can hold", w.m.freelist, count)
	}
	for i := range count {
		if id := native.Uint64(b[start+8*i:]); id < 2 || id >= w.m.hwm {
			return fmt.Errorf("freelist page %d lists page %d, outside pages 2..%d", w.m.freelist, id, w.m.hwm-1)
		}
	}
	return nil
}

// keyRange bounds the keys of a subtree as bbolt's own check at open
// wants them: at least min (when set), below maxOpen (when set). bbolt runs
// that check on a goroutine of its own and, when it finds keys out of
// order, closes the transaction under it and crashes the process: such a
// file must be refused here.
type keyRange struct{ min, maxOpen []byte }

// tree checks the branch or leaf page id and everything below it, and
// returns the largest key under it.
func (w *walker) tree(id uint64, depth int, r keyRange) ([]byte, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("page %d: the tree is deeper than %d levels", id, maxDepth)
	}
	b, flags, err := w.page(id, "a tree")
	if err != nil {
		return nil, err
	}
	switch flags {
	case flagBranch:
		return w.branch(id, b, depth, r)
	case flagLeaf:
		return w.leaf(fmt.Sprintf("page %d", id), b, depth, &r)
	}
	return nil, fmt.Errorf("page %d has flags %#x, neither branch nor leaf: it was overwritten", id, flags)
}

func (w *walker) branch(id uint64, b []byte, depth int, r keyRange) ([]byte, error) {
	count := int(native.Uint16(b[10:]))
	if count == 0 {
		return nil, fmt.Errorf("branch page %d is empty", id)
	}
	keys := make([][]byte, count)
	for i := range count {
		off := pageHeaderSize + i*elementSize
		if off+elementSize > len(b) {
			return nil, fmt.Errorf("branch page %d: %d elements do not fit", id, count)
		}
		e := b[off:]
		pos, ksize := native.Uint32(e), native.Uint32(e[4:])
		if err := inside(b, off, pos, ksize); err != nil {
			return nil, fmt.Errorf("branch page %d, element %d: %w", id, i, err)
		}
		keys[i] = b[off+int(pos) : off+int(pos)+int(ksize)]
	}
	running, maxKey := r.min, []byte(nil)
	for i := range count {
		if err := keyInOrder(keys[i], i, running, r.maxOpen); err != nil {
			return nil, fmt.Errorf("branch page %d, element %d: %w", id, i, err)
		}
		child := keyRange{min: keys[i], maxOpen: r.maxOpen}
		if i+1 < count {
			child.maxOpen = keys[i+1]
		}
		var err error
		if maxKey, err = w.tree(native.Uint64(b[pageHeaderSize+i*elementSize+8:]), depth+1, child); err != nil {
			return nil, err
		}
		running = maxKey
	}
	return maxKey, nil
}

// keyInOrder is bbolt's rule for the i-th key of a page after prev (the
// range's minimum for the first), below maxOpen.
func keyInOrder(key []byte, i int, prev, maxOpen []byte) error {
	switch {
	case i == 0 && prev != nil && bytes.Compare(prev, key) > 0:
		return fmt.Errorf("its first key sorts before its parent's")
	case i > 0 && bytes.Compare(prev, key) >= 0:
		return fmt.Errorf("keys out of order")
	case maxOpen != nil && bytes.Compare(key, maxOpen) >= 0:
		return fmt.Errorf("a key sorts after the next one of its parent")
	}
	return nil
}

// leaf checks a leaf page (or an inline bucket's page, which has no id and
// whose keys bbolt does not check: r nil) and the buckets its elements
// hold, and returns its last key.
func (w *walker) leaf(where string, b []byte, depth int, r *keyRange) ([]byte, error) {
	count := int(native.Uint16(b[10:]))
	var last []byte
	for i := range count {
		off := pageHeaderSize + i*elementSize
		if off+elementSize > len(b) {
			return nil, fmt.Errorf("leaf %s: %d elements do not fit", where, count)
		}
		e := b[off:]
		pos, ksize, vsize := native.Uint32(e[4:]), native.Uint32(e[8:]), native.Uint32(e[12:])
		if err := inside(b, off, pos, ksize+vsize); err != nil || ksize+vsize < ksize {
			return nil, fmt.Errorf("leaf %s, element %d: key and value out of the page", where, i)
		}
		key := b[off+int(pos) : off+int(pos)+int(ksize)]
		if r != nil {
			prev := last
			if i == 0 {
				prev = r.min
			}
			if err := keyInOrder(key, i, prev, r.maxOpen); err != nil {
				return nil, fmt.Errorf("leaf %s, element %d: %w", where, i, err)
			}
		}
		last = key
		if native.Uint32(e)&leafIsBucket == 0 {
			continue
		}
		start := off + int(pos) + int(ksize)
		if err := w.bucket(b[start:start+int(vsize)], fmt.Sprintf("%s, element %d", where, i), depth); err != nil {
			return nil, err
		}
	}
	return last, nil
}

// bucket checks a bucket value: a root page, or an inline page after the
// header.
func (w *walker) bucket(v []byte, where string, depth int) error {
	if len(v) < bucketHeader {
		return fmt.Errorf("bucket at %s: %d bytes, shorter than a bucket header", where, len(v))
	}
	if root := native.Uint64(v); root != 0 {
		_, err := w.tree(root, depth+1, keyRange{})
		return err
	}
	inline := v[bucketHeader:]
	if len(inline) < pageHeaderSize {
		return fmt.Errorf("inline bucket at %s is cut short", where)
	}
	if flags := native.Uint16(inline[8:]); flags != flagLeaf {
		return fmt.Errorf("inline bucket at %s has flags %#x, not a leaf", where, flags)
	}
	_, err := w.leaf("inline bucket at "+where, inline, depth+1, nil)
	return err
}

// inside says whether n bytes at pos, counted from offset off of b, lie in b.
func inside(b []byte, off int, pos, n uint32) error {
	end := uint64(off) + uint64(pos) + uint64(n)
	if end > uint64(len(b)) {
		return fmt.Errorf("%d bytes at %d reach past the page's %d bytes", n, uint64(off)+uint64(pos), len(b))
	}
	return nil
}
