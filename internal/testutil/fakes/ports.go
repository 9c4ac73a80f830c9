package fakes

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/vxbridge/vxbridge/portproxy"
)

// Ports is an in-memory host for published ports (a driver/ports.Reserver):
// the ports vxbridge holds (Held), and the ones other processes listen on
// (Busy), both by "proto host:port".
type Ports struct {
	mu       sync.Mutex
	Held     map[string]portproxy.Mapping
	Busy     map[string]bool
	NoIPv6   bool
	Lo, Hi   uint16 // the ephemeral range
	Reserves int    // Reserve calls
}

// NewPorts has the ephemeral range 40000-40009.
func NewPorts() *Ports {
	return &Ports{Held: map[string]portproxy.Mapping{}, Busy: map[string]bool{}, Lo: 40000, Hi: 40009}
}

func portKey(m portproxy.Mapping) string { return m.Proto + " " + m.Host.String() }

func (f *Ports) Reserve(m portproxy.Mapping) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Reserves++
	if f.Busy[portKey(m)] {
		return fmt.Errorf("%w: %s", portproxy.ErrInUse, portKey(m))
	}
	f.Held[portKey(m)] = m
	return nil
}

func (f *Ports) Release(m portproxy.Mapping) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.Held, portKey(m))
}

func (f *Ports) Sync(want []portproxy.Mapping) error {
	f.mu.Lock()
	f.Held = map[string]portproxy.Mapping{}
	f.mu.Unlock()
	var errs []error
	for _, m := range want {
		errs = append(errs, f.Reserve(m))
	}
	return errors.Join(errs...)
}

func (f *Ports) IPv6() bool                                 { return !f.NoIPv6 }
func (f *Ports) EphemeralRange() (lo, hi uint16, err error) { return f.Lo, f.Hi, nil }

// Keys lists the held ports, sorted.
func (f *Ports) Keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.Held))
}

// PortBindings is docker's portmap option as it reaches the plugin,
// JSON-decoded (numbers are float64). Each spec is
// "HOSTIP:HOSTPORT[-END]:PORT/PROTO", HOSTIP and HOSTPORT possibly empty.
func PortBindings(specs ...string) []interface{} {
	var list []interface{}
	for _, s := range specs {
		rest, proto, _ := strings.Cut(s, "/")
		i := strings.LastIndex(rest, ":")
		hostPart, port := rest[:i], rest[i+1:]
		j := strings.LastIndex(hostPart, ":")
		hostIP, hostPorts := strings.Trim(hostPart[:j], "[]"), hostPart[j+1:]
		lo, hi, _ := strings.Cut(hostPorts, "-")
		num := func(s string) float64 {
			var n float64
			fmt.Sscan(s, &n)
			return n
		}
		list = append(list, map[string]interface{}{"Proto": float64(map[string]int{"tcp": 6, "udp": 17, "sctp": 132}[proto]),
			"IP": "", "Port": num(port), "HostIP": hostIP, "HostPort": num(lo), "HostPortEnd": num(hi)})
	}
	return list
}
