package status

// Ownership is what start-up found of the state file and of the kernel's
// vxbridge objects, what it decided (package ownership), and what the
// reconciler has left in place since.
type Ownership struct {
	// Identity is the state file's; the links, rules and namespaces the
	// plugin makes carry it.
	Identity string `json:"identity"`
	// Decision is start-up's: proceed, keep-unclaimed, adopt or purge.
	Decision string `json:"decision"`
	// Message is the decision's log line: the state file and the kernel as
	// found, and what was done.
	Message string `json:"message"`
	// Kernel counts the kernel's vxbridge objects at start-up by the
	// identity of the state file that made them ("": before identities).
	Kernel map[string]int `json:"kernel,omitempty"`
	// Kept are the objects no record claims that the last reconcile left
	// in place: another state file's, or this one's while it went back in
	// time ("<netns>:<link>", "netns:<name>", "rules:<comment>").
	Kept []string `json:"kept,omitempty"`
}
