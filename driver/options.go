package driver

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/ipam"
	"github.com/vxbridge/vxbridge/store"
)

// Option names accepted with `docker network create -o`. They are docker's own
// bridge-driver names, so its users feel at home.
const (
	OptBridgeName      = "com.docker.network.bridge.name"
	OptMTU             = "com.docker.network.driver.mtu"
	OptICC             = "com.docker.network.bridge.enable_icc"
	OptMasquerade      = "com.docker.network.bridge.enable_ip_masquerade"
	OptHostBindingIPv4 = "com.docker.network.bridge.host_binding_ipv4"
	// OptEnableIPv4 and OptEnableIPv6 are read by docker 28 and later itself
	// (as --ipv4/--ipv6 when those are not given, also from a daemon.json
	// default-network-opts entry); vxbridge checks older docker did the same.
	OptEnableIPv4 = "com.docker.network.enable_ipv4"
	OptEnableIPv6 = "com.docker.network.enable_ipv6"
	// OptVXLANID makes the network cross-host: its VXLAN network identifier.
	OptVXLANID = "vxlan.id"
)

// Keys docker itself puts in CreateNetwork's option map (top level, beside
// the generic `-o` map).
const (
	keyGeneric    = "com.docker.network.generic"
	keyEnableIPv4 = OptEnableIPv4 // sent by docker 28 and later only
	keyEnableIPv6 = OptEnableIPv6
	keyInternal   = "com.docker.network.internal"
)

// BridgePrefix starts the default bridge name: vxb- plus 11 hex of the id.
const BridgePrefix = "vxb-"

const (
	minMTU     = 68
	minMTUIPv6 = 1280 // RFC 8200: an IPv6 link carries at least 1280 bytes
	maxMTU     = 65535
)

var knownOptions = []string{OptBridgeName, OptMTU, OptICC, OptMasquerade, OptHostBindingIPv4,
	OptEnableIPv4, OptEnableIPv6, OptVXLANID}

// ErrInvalid marks a request docker (or the user) got wrong.
var ErrInvalid = errors.New("invalid request")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// parseNetwork turns a CreateNetwork request into the network record it asks
// for. It is pure: no kernel, no store.
func parseNetwork(req *network.CreateNetworkRequest) (*store.Network, error) {
	if err := validID("network", req.NetworkID); err != nil {
		return nil, err
	}
	n := &store.Network{
		ID:         req.NetworkID,
		Bridge:     BridgePrefix + req.NetworkID[:min(11, len(req.NetworkID))],
		ICC:        true,
		Masquerade: true,
	}
	var err error
	if n.EnableIPv6, err = boolOption(req.Options, keyEnableIPv6); err != nil {
		return nil, err
	}
	if n.Internal, err = boolOption(req.Options, keyInternal); err != nil {
		return nil, err
	}
	if n.Options, err = genericOptions(req.Options); err != nil {
		return nil, err
	}
	if err := applyOptions(n, n.Options); err != nil {
		return nil, err
	}
	if n.IPv4, err = parseIPAMData(req.IPv4Data, false); err != nil {
		return nil, err
	}
	if n.IPv6, err = parseIPAMData(req.IPv6Data, true); err != nil {
		return nil, err
	}
	if _, resolved := req.Options[keyEnableIPv4]; !resolved {
		if err := checkFamilyOptions(n); err != nil {
			return nil, err
		}
	}
	if len(n.IPv6) > 0 && n.MTU != 0 && n.MTU < minMTUIPv6 {
		return nil, invalidf("option %s=%d is below %d, the minimum MTU of an IPv6 network", OptMTU, n.MTU, minMTUIPv6)
	}
	return n, nil
}

func validID(what, id string) error {
	if id == "" {
		return invalidf("%s id is empty", what)
	}
	if len(id) > 128 {
		return invalidf("%s id is %d characters long (at most 128)", what, len(id))
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' || r == '_' || r == '.') {
			return invalidf("%s id %q has the character %q", what, id, r)
		}
	}
	return nil
}

// boolOption reads a top-level docker option that may arrive as a JSON bool
// or as a string.
func boolOption(opts map[string]interface{}, key string) (bool, error) {
	switch v := opts[key].(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	case string:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, invalidf("option %s=%q is not a boolean", key, v)
		}
		return b, nil
	default:
		return false, invalidf("option %s has type %T, want a boolean", key, v)
	}
}

// genericOptions extracts the `-o key=value` map.
func genericOptions(opts map[string]interface{}) (map[string]string, error) {
	out := map[string]string{}
	switch g := opts[keyGeneric].(type) {
	case nil:
	case map[string]interface{}:
		for k, v := range g {
			switch v := v.(type) {
			case string:
				out[k] = v
			case bool, float64:
				out[k] = fmt.Sprint(v)
			default:
				return nil, invalidf("option %s has type %T, want a string", k, v)
			}
		}
	default:
		return nil, invalidf("%s has type %T, want an object", keyGeneric, g)
	}
	return out, nil
}

func applyOptions(n *store.Network, opts map[string]string) error {
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys) // report the same unknown option every time
	for _, k := range keys {
		if err := applyOption(n, k, opts[k]); err != nil {
			return err
		}
	}
	return nil
}

func applyOption(n *store.Network, key, val string) error {
	var err error
	switch key {
	case OptBridgeName:
		err := bridge.ValidateName(val)
		if err == nil {
			err = firewall.ValidateBridgeName(val)
		}
		if err != nil {
			return invalidf("option %s=%q: %v", key, val, err)
		}
		n.Bridge = val
	case OptMTU:
		n.MTU, err = strconv.Atoi(val)
		if err != nil || n.MTU < minMTU || n.MTU > maxMTU {
			return invalidf("option %s=%q: want a whole number from %d to %d", key, val, minMTU, maxMTU)
		}
	case OptICC:
		n.ICC, err = parseBool(key, val)
	case OptMasquerade:
		n.Masquerade, err = parseBool(key, val)
	case OptHostBindingIPv4:
		a, perr := netip.ParseAddr(val)
		if perr != nil || !a.Is4() {
			return invalidf("option %s=%q: want an IPv4 address", key, val)
		}
		n.HostBindingIPv4 = a
	case OptEnableIPv4, OptEnableIPv6:
		// Docker 28+ has read them into the network's top-level settings
		// already; checkFamilyOptions covers older docker.
		_, err = parseBool(key, val)
	case OptVXLANID:
		n.VNI, err = parseVNI(key, val)
	default:
		return foreignOption(key, val)
	}
	return err
}

// checkFamilyOptions is for docker before 28, which does not read
// -o com.docker.network.enable_ipv4/enable_ipv6 (it sends no top-level
// enable_ipv4 either): it made the network by --ipv6 alone, and an option
// asking for something else would be silently ignored, so it is refused.
func checkFamilyOptions(n *store.Network) error {
	if v, ok := n.Options[OptEnableIPv6]; ok {
		if want, _ := strconv.ParseBool(v); want != n.EnableIPv6 {
			return invalidf("option %s=%s: this docker (before 28) does not read it and made the network with IPv6 %s: "+
				"use --ipv6=%t instead", OptEnableIPv6, v, onOff(n.EnableIPv6), want)
		}
	}
	if v, ok := n.Options[OptEnableIPv4]; ok {
		if want, _ := strconv.ParseBool(v); want != (len(n.IPv4) > 0) {
			return invalidf("option %s=%s: this docker (before 28) does not read it and made the network with IPv4 %s: "+
				"networks without IPv4 need docker 28 or later", OptEnableIPv4, v, onOff(len(n.IPv4) > 0))
		}
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func parseBool(key, val string) (bool, error) {
	b, err := strconv.ParseBool(val)
	if err != nil {
		return false, invalidf("option %s=%q: want true or false", key, val)
	}
	return b, nil
}

func parseIPAMData(data []*network.IPAMData, v6 bool) ([]store.Subnet, error) {
	family := "IPv4"
	if v6 {
		family = "IPv6"
	}
	var out []store.Subnet
	for _, d := range data {
		if d == nil {
			continue
		}
		s, err := parseSubnet(d, v6)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if len(out) > 1 {
		return nil, invalidf("%d %s subnets given: a vxbridge network has at most one per address family", len(out), family)
	}
	return out, nil
}

func parseSubnet(d *network.IPAMData, v6 bool) (store.Subnet, error) {
	var s store.Subnet
	pool, err := netip.ParsePrefix(d.Pool)
	if err != nil {
		return s, invalidf("subnet %q is not a CIDR: %v", d.Pool, err)
	}
	if pool.Addr().Is6() != v6 || pool.Addr().Is4In6() {
		return s, invalidf("subnet %s is not of the expected address family", pool)
	}
	if pool != pool.Masked() {
		return s, invalidf("subnet %s has host bits set (did you mean %s?)", pool, pool.Masked())
	}
	if err := ipam.CheckSubnet(pool); err != nil {
		return s, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	s.Pool = pool
	s.AddressSpace = d.AddressSpace
	if d.Gateway != "" {
		if s.Gateway, err = addrInPool(d.Gateway, pool); err != nil {
			return s, invalidf("gateway %v", err)
		}
	}
	for name, v := range d.AuxAddresses {
		str, ok := v.(string)
		if !ok {
			return s, invalidf("aux address %q has type %T, want a string", name, v)
		}
		p, err := addrInPool(str, pool)
		if err != nil {
			return s, invalidf("aux address %q: %v", name, err)
		}
		if s.Aux == nil {
			s.Aux = map[string]netip.Addr{}
		}
		s.Aux[name] = p.Addr()
	}
	return s, nil
}

// addrInPool parses "10.0.0.1/24" or "10.0.0.1" and returns it with the
// pool's prefix length, refusing addresses outside the pool.
func addrInPool(s string, pool netip.Prefix) (netip.Prefix, error) {
	a, err := parseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if !pool.Contains(a) {
		return netip.Prefix{}, fmt.Errorf("%s is outside subnet %s", a, pool)
	}
	return netip.PrefixFrom(a, pool.Bits()), nil
}

// parseAddr accepts an address in CIDR or bare form.
func parseAddr(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return a.Unmap(), nil
}

// overlapping returns the first subnet of other that overlaps one of n's.
func overlapping(n, other *store.Network) (mine, theirs netip.Prefix, ok bool) {
	for _, a := range n.Subnets() {
		for _, b := range other.Subnets() {
			if a.Pool.Overlaps(b.Pool) {
				return a.Pool, b.Pool, true
			}
		}
	}
	return netip.Prefix{}, netip.Prefix{}, false
}

// Docker's own bridge driver (docker 29, moby v2) reads more options than
// vxbridge implements. Each is listed here with why: a value that asks for
// what vxbridge does anyway (docker's default, e.g. from a daemon.json
// default-network-opts shared with the bridge driver) is accepted, any other
// is refused saying why. Keys neither here nor above are refused as unknown.
var foreignOptions = map[string]struct {
	accept func(string) bool
	why    string
}{
	"com.docker.network.bridge.gateway_mode_ipv4": {isValue("nat"), whyNAT},
	"com.docker.network.bridge.gateway_mode_ipv6": {isValue("nat"), whyNAT},
	"com.docker.network.bridge.inhibit_ipv4": {isFalse,
		"vxbridge's bridge holds the network's gateway address: containers route through it"},
	"com.docker.network.bridge.default_bridge": {isFalse,
		"it marks docker's own default network (docker0), which only docker's bridge driver makes"},
	"com.docker.network.bridge.trusted_host_interfaces": {isValue(""),
		"direct access to containers' published ports from chosen host interfaces is not implemented"},
	"com.docker.network.host_ipv4": {isValue(""), whySNAT},
	"com.docker.network.host_ipv6": {isValue(""), whySNAT},
	"com.docker.network.container_iface_prefix": {isValue("eth"),
		"containers' interfaces are named eth0, eth1, ... (docker's default); another prefix is not implemented"},
	// The current daemon itself sends the unsolicited ARP/NA when it
	// configures a container's interface, for every driver (20.10 ignores
	// the option): nothing for vxbridge to do, so every value docker takes
	// is accepted.
	"com.docker.network.advertise_addr_nmsgs": {inRange(0, 3), "docker takes 0 to 3 messages"},
	"com.docker.network.advertise_addr_ms":    {inRange(100, 2000), "docker takes 100 to 2000 milliseconds"},
}

const whySNAT = "a fixed source address for outbound traffic is not implemented: " +
	"vxbridge masquerades to the outgoing interface's address"

const whyNAT = "vxbridge always masquerades outbound traffic and publishes ports by DNAT (docker's \"nat\" mode); " +
	"for no source NAT use " + OptMasquerade + "=false, for no way out --internal"

// foreignOption accepts or refuses one of docker's bridge-driver options
// vxbridge does not implement, or refuses an unknown key.
func foreignOption(key, val string) error {
	f, ok := foreignOptions[key]
	if !ok {
		return invalidf("unknown option %q (vxbridge understands %s)", key, strings.Join(knownOptions, ", "))
	}
	if f.accept(val) {
		return nil
	}
	return invalidf("option %s=%q is refused: %s", key, val, f.why)
}

func isValue(want string) func(string) bool { return func(v string) bool { return v == want } }

func isFalse(v string) bool {
	b, err := strconv.ParseBool(v)
	return err == nil && !b
}

func inRange(lo, hi int) func(string) bool {
	return func(v string) bool {
		n, err := strconv.Atoi(v)
		return err == nil && n >= lo && n <= hi
	}
}
