package driver

import (
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/vxbridge/vxbridge/internal/testutil/fakes"
	"github.com/vxbridge/vxbridge/store"
)

// The driver tier runs against internal/testutil/fakes' in-memory kernel and a real
// bbolt store that can be told to fail.

// failingStore fails the named operation once armed.
type failingStore struct {
	*store.DB
	failSaveEndpoint bool
	failSaveNetwork  bool
}

var errDisk = errors.New("disk full")

func (s *failingStore) SaveEndpoint(ep *store.Endpoint) error {
	if s.failSaveEndpoint {
		return errDisk
	}
	return s.DB.SaveEndpoint(ep)
}

func (s *failingStore) SaveNetwork(n *store.Network) error {
	if s.failSaveNetwork {
		return errDisk
	}
	return s.DB.SaveNetwork(n)
}

type harness struct {
	d     *Driver
	links *fakes.Links
	fw    *fakes.Firewall
	st    *failingStore
	dir   string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	h := &harness{links: fakes.NewLinks(), fw: fakes.NewFirewall(), st: &failingStore{DB: db}, dir: dir}
	h.d = New(Config{Store: h.st, Links: h.links, Firewall: h.fw, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return h
}
