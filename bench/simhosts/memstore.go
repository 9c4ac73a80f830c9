package main

import (
	"fmt"
	"maps"
	"net/netip"
	"sync"

	"github.com/vxbridge/vxbridge/store"
)

// memStore is ipam.Store in memory: a synthetic host's local records (its
// pools, addresses and held address blocks) matter to it only for the
// addresses it hands out, never to etcd or to the measurement.
type memStore struct {
	mu    sync.Mutex
	pools map[string]store.Pool
	addrs map[string]map[netip.Addr]store.AddressKind
	meta  map[string]string
}

func newMemStore() *memStore {
	return &memStore{pools: map[string]store.Pool{}, addrs: map[string]map[netip.Addr]store.AddressKind{}, meta: map[string]string{}}
}

func (m *memStore) Pools() ([]store.Pool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]store.Pool, 0, len(m.pools))
	for _, p := range m.pools {
		out = append(out, p)
	}
	return out, nil
}

func (m *memStore) SavePool(p *store.Pool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pools[p.ID] = *p
	if m.addrs[p.ID] == nil {
		m.addrs[p.ID] = map[netip.Addr]store.AddressKind{}
	}
	return nil
}

func (m *memStore) DeletePool(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.pools, id)
	delete(m.addrs, id)
	return nil
}

func (m *memStore) SaveAddress(poolID string, addr netip.Addr, kind store.AddressKind, next netip.Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pools[poolID]
	if !ok {
		return fmt.Errorf("pool %s is not stored", poolID)
	}
	m.addrs[poolID][addr] = kind
	if next.IsValid() {
		p.Next = next
		m.pools[poolID] = p
	}
	return nil
}

func (m *memStore) DeleteAddress(poolID string, addr netip.Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.addrs[poolID], addr)
	return nil
}

func (m *memStore) Addresses(poolID string) (map[netip.Addr]store.AddressKind, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.addrs[poolID]), nil
}

func (m *memStore) Meta(key string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.meta[key], nil
}

func (m *memStore) SetMeta(key, value string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.meta[key] = value
	return nil
}

func (m *memStore) SetPoolRefs(id string, refs int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pools[id]
	if !ok {
		return fmt.Errorf("pool %s is not stored", id)
	}
	p.Refs = refs
	m.pools[id] = p
	return nil
}
