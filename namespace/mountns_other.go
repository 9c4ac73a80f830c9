//go:build !linux

package namespace

// MountNS is a mount namespace other than the process's own; only Linux
// has them.
type MountNS struct{}

// Close is a no-op.
func (m *MountNS) Close() {}

// Run runs fn.
func (m *MountNS) Run(fn func() error) error { return fn() }
