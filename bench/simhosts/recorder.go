package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/vxbridge/vxbridge/bench/sim"
)

// recorder appends records to the -records file, one JSON line each, from
// one goroutine; flush waits until everything handed over is written.
type recorder struct {
	ch   chan any // sim.Record, or a chan struct{} to close once flushed
	done chan struct{}
	err  error

	mu     sync.RWMutex // held for reading while sending on ch
	closed bool
}

func newRecorder(path string) (*recorder, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("records file: %w", err)
	}
	r := &recorder{ch: make(chan any, 4096), done: make(chan struct{})}
	go r.write(f)
	return r, nil
}

func (r *recorder) write(f *os.File) {
	defer close(r.done)
	w := bufio.NewWriterSize(f, 1<<16)
	enc := json.NewEncoder(w)
	for item := range r.ch {
		switch v := item.(type) {
		case sim.Record:
			if err := enc.Encode(v); err != nil && r.err == nil {
				r.err = err
			}
		case chan struct{}:
			if err := w.Flush(); err != nil && r.err == nil {
				r.err = err
			}
			close(v)
		}
	}
	if err := w.Flush(); err != nil && r.err == nil {
		r.err = err
	}
	if err := f.Close(); err != nil && r.err == nil {
		r.err = err
	}
}

// send hands item to the writer; after close it is dropped (a host's
// stamper may still run while the process ends).
func (r *recorder) send(item any) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return false
	}
	r.ch <- item
	return true
}

func (r *recorder) add(rec sim.Record) { r.send(rec) }

// flush returns once every record added before it is in the file.
func (r *recorder) flush(ctx context.Context) error {
	done := make(chan struct{})
	if !r.send(done) {
		return errors.New("records file already closed")
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close writes what is left and closes the file.
func (r *recorder) close() error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.ch)
	}
	r.mu.Unlock()
	<-r.done
	return r.err
}

// syncer is the part of cluster.Client that says when published records
// are in etcd.
type syncer interface {
	Synced() (done bool, next <-chan struct{})
}

// stamper gives one host's writes their commit time: a write handed over
// after its Publish or Withdraw call is in etcd once the client reports
// everything published so far synced, so each record is stamped at the
// first such report that comes after it was handed over. The client's own
// API says it; the key layout under it does not matter.
type stamper struct {
	c   syncer
	rec *recorder

	mu      sync.Mutex
	pending []sim.Record
	kick    chan struct{}
}

func newStamper(c syncer, rec *recorder) *stamper {
	return &stamper{c: c, rec: rec, kick: make(chan struct{}, 1)}
}

// add hands over a record whose Publish or Withdraw call has returned.
func (s *stamper) add(r sim.Record) {
	s.mu.Lock()
	s.pending = append(s.pending, r)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *stamper) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

func (s *stamper) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		if !s.drain(ctx) {
			return
		}
	}
}

// drain stamps pending records until none is left; false when ctx ended.
func (s *stamper) drain(ctx context.Context) bool {
	for {
		n := s.count()
		if n == 0 {
			return true
		}
		// The n records were handed over before this question: "synced"
		// covers them.
		done, next := s.c.Synced()
		if !done {
			select {
			case <-ctx.Done():
				return false
			case <-next:
			}
			continue
		}
		now := time.Now().UnixNano()
		s.mu.Lock()
		batch := s.pending[:n:n]
		s.pending = s.pending[n:]
		s.mu.Unlock()
		for _, r := range batch {
			r.Committed = now
			s.rec.add(r)
		}
	}
}
