package driver

// Crash points: the steps of each API call at which a test build can kill the
// plugin (Config.Crash). Release builds never set the hook, so each point
// costs one nil check. The names are stable: tests and RELIABILITY.md use them.
const (
	CrashNetworkKernel     = "network/kernel-built"   // bridge, VXLAN and rules made; no record yet
	CrashNetworkSaved      = "network/saved"          // record written; reply not sent
	CrashNetworkDeleted    = "network-delete/record"  // record dropped; kernel objects still there
	CrashEndpointVeth      = "endpoint/veth-created"  // veth made; no record yet
	CrashEndpointSaved     = "endpoint/saved"         // record written; reply not sent
	CrashJoinSaved         = "join/saved"             // joined record written; reply not sent
	CrashLeaveSaved        = "leave/saved"            // left record written; ports not yet removed
	CrashEndpointDeleted   = "endpoint-delete/record" // record dropped; veth still there
	CrashEndpointVethGone  = "endpoint-delete/veth"   // veth deletion handed to the kernel; reply not sent
	CrashPortsKernel       = "ports/kernel"           // port rules and sockets in place; record not updated
	CrashPortsRevokeRecord = "ports-revoke/record"    // ports dropped from the record; rules still there
)

// CrashPoints lists every driver crash point, in call order.
var CrashPoints = []string{
	CrashNetworkKernel, CrashNetworkSaved, CrashNetworkDeleted,
	CrashEndpointVeth, CrashEndpointSaved, CrashJoinSaved, CrashLeaveSaved,
	CrashEndpointDeleted, CrashEndpointVethGone, CrashPortsKernel, CrashPortsRevokeRecord,
}

// crash calls the test-only crash hook, if any, at point.
func (d *Driver) crash(point string) {
	if d.crashHook != nil {
		d.crashHook(point)
	}
}
