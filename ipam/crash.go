package ipam

// Crash points of the IPAM calls (Options.Crash), for test builds only: each
// is after the store write and before the reply.
const (
	CrashPoolSaved       = "ipam/pool-saved"
	CrashPoolReleased    = "ipam/pool-released"
	CrashAddressSaved    = "ipam/address-saved"
	CrashAddressReleased = "ipam/address-released"
)

// CrashPoints lists every IPAM crash point.
var CrashPoints = []string{CrashPoolSaved, CrashPoolReleased, CrashAddressSaved, CrashAddressReleased}

func (d *Driver) crash(point string) {
	if d.crashHook != nil {
		d.crashHook(point)
	}
}
