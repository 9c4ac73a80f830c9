// Package linkgroup names the interface groups (IFLA_GROUP) vxbridge marks
// its links with. Unlike the alias, which the kernel ignores when a link is
// created, the group is set atomically with the creation, so a link is never
// unmarked, whenever the process dies. No other software is expected to use
// these groups: vxbridge deletes every link in either.
package linkgroup

const (
	// Build holds links being built. Every link vxbridge creates (bridge,
	// veth, VXLAN device) is born in it and leaves it, for the default
	// group 0, once its alias and settings are in place; one still in it
	// when no build runs was left half-built by a crash.
	Build = 0x76786262 // "vxbb"
	// Retire holds links waiting for the background reaper to delete them
	// in one batch.
	Retire = 0x76786272 // "vxbr"
)
