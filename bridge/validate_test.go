package bridge

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"br0", true},
		{"vxb-1234567890a", true}, // 15 bytes
		{"a", true},
		{"br.100", true},
		{"", false},
		{"vxb-1234567890ab", false}, // 16 bytes
		{".", false},
		{"..", false},
		{"a/b", false},
		{"a:b", false},
		{"br%d", false},
		{"a b", false},
		{"a\tb", false},
		{"a\nb", false},
		{"a\x00b", false},
		{"a\xa0b", false},
		{"ünï", true}, // bytes the kernel does not reject
	} {
		err := ValidateName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%t", tc.name, err, tc.ok)
		}
	}
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"br0", "", "..", "a/b", "br%d", "vxb-1234567890ab"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		if len(name) < 1 || len(name) > maxNameLen || name == "." || name == ".." ||
			strings.ContainsAny(name, "/:% \t\n\v\f\r\x00") || strings.IndexByte(name, 0xa0) >= 0 {
			t.Fatalf("ValidateName accepted %q", name)
		}
	})
}

func TestBridgeConfigValidate(t *testing.T) {
	good := BridgeConfig{
		Name:  "vxb0",
		Alias: "vxbridge:net:1",
		MTU:   1450,
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("fd00::1/64")},
	}
	if err := good.validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for what, mutate := range map[string]func(*BridgeConfig){
		"bad name":     func(c *BridgeConfig) { c.Name = "a/b" },
		"empty alias":  func(c *BridgeConfig) { c.Alias = "" },
		"long alias":   func(c *BridgeConfig) { c.Alias = strings.Repeat("x", 256) },
		"negative mtu": func(c *BridgeConfig) { c.MTU = -1 },
		"zero prefix":  func(c *BridgeConfig) { c.Addrs = []netip.Prefix{{}} },
		"mapped v4":    func(c *BridgeConfig) { c.Addrs = []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.1/120")} },
	} {
		c := good
		c.Addrs = append([]netip.Prefix(nil), good.Addrs...)
		mutate(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: accepted %+v", what, c)
		}
	}
}

func TestVethConfigValidate(t *testing.T) {
	good := VethConfig{
		HostName: "vxh1", PeerName: "vxp1", Bridge: "vxb0", Alias: "vxbridge:ep:1",
		MTU: 1450, MAC: net.HardwareAddr{0x02, 0x42, 0, 0, 0, 1},
	}
	if err := good.validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	noMAC := good
	noMAC.MAC = nil
	if err := noMAC.validate(); err != nil {
		t.Fatalf("config without mac refused: %v", err)
	}
	for what, mutate := range map[string]func(*VethConfig){
		"bad host":      func(c *VethConfig) { c.HostName = "" },
		"bad peer":      func(c *VethConfig) { c.PeerName = "this-is-too-long" },
		"bad bridge":    func(c *VethConfig) { c.Bridge = ".." },
		"same names":    func(c *VethConfig) { c.PeerName = c.HostName },
		"empty alias":   func(c *VethConfig) { c.Alias = "" },
		"negative mtu":  func(c *VethConfig) { c.MTU = -5 },
		"short mac":     func(c *VethConfig) { c.MAC = net.HardwareAddr{1, 2, 3} },
		"multicast mac": func(c *VethConfig) { c.MAC = net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1} },
		"zero mac":      func(c *VethConfig) { c.MAC = make(net.HardwareAddr, 6) },
	} {
		c := good
		mutate(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: accepted %+v", what, c)
		}
	}
}
