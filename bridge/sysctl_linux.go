package bridge

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vxbridge/vxbridge/namespace"
)

// EnableForwarding turns on IPv4 forwarding, and IPv6 forwarding when ipv6,
// leaving sysctls that are already on untouched.
//
// Turning on net.ipv6.conf.all.forwarding makes every interface a router,
// and routers ignore router advertisements unless accept_ra is 2: a host
// that takes its IPv6 default route from RAs keeps it only until it expires.
// Docker's own bridge driver does the same; the host must set accept_ra=2 on
// its uplink to keep SLAAC.
func (m *Manager) EnableForwarding(ipv6 bool) error {
	keys := []string{"net/ipv4/ip_forward"}
	if ipv6 {
		keys = append(keys, "net/ipv6/conf/all/forwarding")
	}
	for _, k := range keys {
		if err := m.setSysctl(k, "1"); err != nil {
			return fmt.Errorf("enable forwarding: %w", err)
		}
	}
	return nil
}

// setSysctl writes value to /proc/sys/<key> in the Manager's namespace unless
// it already holds it; the read first keeps a replay from writing at all. A
// missing key is an error matching fs.ErrNotExist.
func (m *Manager) setSysctl(key, value string) error {
	path := filepath.Join("/proc/sys", key)
	return m.inNetNS(func() error {
		cur, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if strings.TrimSpace(string(cur)) == value {
			return nil
		}
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	})
}

// inNetNS runs fn where /proc/sys/net shows the Manager's namespace. The
// kernel resolves /proc/sys/net against the calling thread's network
// namespace, so for a Manager from NewAt fn runs on a thread switched into
// m.ns and back (namespace.Do: a thread that cannot be switched back is
// never handed to other goroutines).
func (m *Manager) inNetNS(fn func() error) error {
	if !m.hasNS {
		return fn()
	}
	return namespace.Do(m.ns, fn)
}
