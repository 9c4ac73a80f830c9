package bridge

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// maxNameLen is IFNAMSIZ minus the terminating NUL.
const maxNameLen = 15

// maxAliasLen is IFALIASZ minus the terminating NUL.
const maxAliasLen = 255

// ValidateName reports whether the kernel would accept name as an interface
// name and keep it as given. Beyond the kernel's own rules (dev_valid_name:
// 1..15 bytes, not "." or "..", no '/', ':' or whitespace) it refuses '%',
// which the kernel treats as a template ("br%d" becomes "br0", so the link
// would not be found again under its configured name), and NUL.
func ValidateName(name string) error {
	switch {
	case name == "":
		return errors.New("interface name is empty")
	case len(name) > maxNameLen:
		return fmt.Errorf("interface name %q is %d bytes, the kernel allows at most %d", name, len(name), maxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is reserved", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; strings.IndexByte("/:%\x00", c) >= 0 || isKernelSpace(c) {
			return fmt.Errorf("interface name %q contains %q, which is not allowed", name, c)
		}
	}
	return nil
}

// isKernelSpace mirrors the kernel's isspace(), which works on bytes and
// also counts 0xa0 (Latin-1 no-break space).
func isKernelSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r', 0xa0:
		return true
	}
	return false
}

// validateAlias refuses an empty alias: ownership is decided by alias
// equality, and "" would claim every link that has none.
func validateAlias(alias string) error {
	switch {
	case alias == "":
		return errors.New("ownership alias is empty")
	case len(alias) > maxAliasLen:
		return fmt.Errorf("ownership alias %q is longer than %d bytes", alias, maxAliasLen)
	}
	return nil
}

func (cfg BridgeConfig) validate() error {
	if err := ValidateName(cfg.Name); err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	if err := validateAlias(cfg.Alias); err != nil {
		return fmt.Errorf("bridge %q: %w", cfg.Name, err)
	}
	if cfg.MTU < 0 {
		return fmt.Errorf("bridge %q: negative mtu %d", cfg.Name, cfg.MTU)
	}
	for _, p := range cfg.Addrs {
		if err := validateGatewayAddr(p); err != nil {
			return fmt.Errorf("bridge %q: %w", cfg.Name, err)
		}
	}
	return nil
}

func validateGatewayAddr(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("invalid address %q", p)
	case p.Addr().Is4In6():
		return fmt.Errorf("address %s is IPv4-mapped IPv6; give it as IPv4", p)
	}
	return nil
}

func (cfg VethConfig) validate() error {
	for _, n := range []struct{ what, name string }{
		{"host end", cfg.HostName}, {"peer end", cfg.PeerName}, {"bridge", cfg.Bridge},
	} {
		if err := ValidateName(n.name); err != nil {
			return fmt.Errorf("veth %s: %w", n.what, err)
		}
	}
	if cfg.HostName == cfg.PeerName {
		return fmt.Errorf("veth %q: host and peer end have the same name", cfg.HostName)
	}
	if err := validateAlias(cfg.Alias); err != nil {
		return fmt.Errorf("veth %q: %w", cfg.HostName, err)
	}
	if cfg.MTU < 0 {
		return fmt.Errorf("veth %q: negative mtu %d", cfg.HostName, cfg.MTU)
	}
	if err := validateMAC(cfg.MAC); err != nil {
		return fmt.Errorf("veth %q: %w", cfg.HostName, err)
	}
	return nil
}

// validateMAC accepts nil (let the kernel pick) or a unicast, non-zero
// ethernet address; the kernel refuses the others with a bare EADDRNOTAVAIL.
func validateMAC(mac net.HardwareAddr) error {
	switch {
	case mac == nil:
		return nil
	case len(mac) != 6:
		return fmt.Errorf("mac %s is not a 6-byte ethernet address", mac)
	case mac[0]&1 != 0:
		return fmt.Errorf("mac %s is a multicast address", mac)
	case slices.Equal(mac, make(net.HardwareAddr, 6)):
		return fmt.Errorf("mac %s is all zeros", mac)
	}
	return nil
}
