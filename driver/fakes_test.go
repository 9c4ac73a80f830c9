package driver

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/store"
)

// fakeLinks is an in-memory kernel: links by name.
type fakeLinks struct {
	mu         sync.Mutex
	links      map[string]bridge.LinkInfo
	bridges    map[string]bridge.BridgeConfig
	veths      map[string]bridge.VethConfig
	forwarding bool
	failVeth   error
	retired    []string // RetireLink'ed, deleted at Flush
}

func newFakeLinks() *fakeLinks {
	return &fakeLinks{links: map[string]bridge.LinkInfo{}, bridges: map[string]bridge.BridgeConfig{}, veths: map[string]bridge.VethConfig{}}
}

func (f *fakeLinks) EnsureBridge(cfg bridge.BridgeConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.links[cfg.Name]; ok && l.Alias != cfg.Alias {
		return fmt.Errorf("interface %q: %w", cfg.Name, bridge.ErrNotOwned)
	}
	f.links[cfg.Name] = bridge.LinkInfo{Name: cfg.Name, Alias: cfg.Alias, Kind: "bridge", MTU: cfg.MTU}
	f.bridges[cfg.Name] = cfg
	return nil
}

func (f *fakeLinks) DeleteBridge(name, alias string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.links[name]; ok && l.Alias == alias {
		delete(f.links, name)
		delete(f.bridges, name)
	}
	return nil
}

func (f *fakeLinks) EnsureVeth(cfg bridge.VethConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failVeth != nil {
		return f.failVeth
	}
	if l, ok := f.links[cfg.HostName]; ok && l.Alias != cfg.Alias {
		return fmt.Errorf("interface %q: %w", cfg.HostName, bridge.ErrNotOwned)
	}
	if _, ok := f.bridges[cfg.Bridge]; !ok {
		return fmt.Errorf("bridge %q not found", cfg.Bridge)
	}
	f.links[cfg.HostName] = bridge.LinkInfo{Name: cfg.HostName, Alias: cfg.Alias, Kind: "veth", Master: cfg.Bridge, MTU: cfg.MTU}
	f.veths[cfg.HostName] = cfg
	return nil
}

func (f *fakeLinks) DeleteLink(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.links, name)
	delete(f.veths, name)
	delete(f.bridges, name)
	return nil
}

// RetireLink keeps the link until Flush, like the kernel's reaper.
func (f *fakeLinks) RetireLink(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.links[name]; ok {
		f.retired = append(f.retired, name)
	}
	return nil
}

func (f *fakeLinks) Flush() {
	f.mu.Lock()
	retired := f.retired
	f.retired = nil
	f.mu.Unlock()
	for _, name := range retired {
		f.DeleteLink(name)
	}
}

func (f *fakeLinks) PurgeUnfinished() error {
	f.Flush()
	return nil
}

func (f *fakeLinks) Link(name string) (bridge.LinkInfo, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[name]
	return l, ok, nil
}

func (f *fakeLinks) OwnedLinks(prefix string) ([]bridge.LinkInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []bridge.LinkInfo
	for _, l := range f.links {
		if strings.HasPrefix(l.Alias, prefix) {
			out = append(out, l)
		}
	}
	return out, nil
}

func (f *fakeLinks) EnableForwarding(bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forwarding = true
	return nil
}

func (f *fakeLinks) names() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]bool{}
	for n := range f.links {
		out[n] = true
	}
	return out
}

// fakeFirewall records the networks whose rules are installed, and the
// published ports by endpoint.
type fakeFirewall struct {
	mu         sync.Mutex
	nets       map[string]firewall.Network
	ports      map[string]firewall.Ports
	failPorts  error
	removed    []firewall.Ports // RemovePorts calls, in order
	failEnsure error
	reconciles int
	jumpFixes  int
}

func (f *fakeFirewall) EnsureNetwork(n firewall.Network) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failEnsure != nil {
		return f.failEnsure
	}
	f.nets[n.ID] = n
	return nil
}

func (f *fakeFirewall) RemoveNetwork(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.nets, id)
	return nil
}

func (f *fakeFirewall) EnsureJumps() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jumpFixes++
	return nil
}

func (f *fakeFirewall) Reconcile(nets []firewall.Network, ports []firewall.Ports) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reconciles++
	f.nets = map[string]firewall.Network{}
	for _, n := range nets {
		f.nets[n.ID] = n
	}
	f.ports = map[string]firewall.Ports{}
	for _, p := range ports {
		f.ports[p.EndpointID] = p
	}
	return nil
}

func (f *fakeFirewall) EnsurePorts(p firewall.Ports) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failPorts != nil {
		return f.failPorts
	}
	if f.ports == nil {
		f.ports = map[string]firewall.Ports{}
	}
	f.ports[p.EndpointID] = p
	return nil
}

func (f *fakeFirewall) RemovePorts(p firewall.Ports) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ports, p.EndpointID)
	f.removed = append(f.removed, p)
	return nil
}

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
	links *fakeLinks
	fw    *fakeFirewall
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
	h := &harness{links: newFakeLinks(), fw: &fakeFirewall{nets: map[string]firewall.Network{}}, st: &failingStore{DB: db}, dir: dir}
	h.d = New(Config{Store: h.st, Links: h.links, Firewall: h.fw, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return h
}
