package firewall

import (
	"fmt"
	"strings"
)

// Backend is what programs the rules: an iptables userland, or vxbridge's
// own nftables tables. The kernel runs both the legacy (x_tables) and the
// nf_tables hooks, so a packet must pass docker's chains AND ours: ours
// must live where docker's live, or docker's FORWARD DROP policy drops
// what our ACCEPT rules let through.
type Backend string

const (
	// BackendPath runs iptables, ip6tables, iptables-restore... as found in
	// PATH: whatever the host's alternatives point at.
	BackendPath Backend = "path"
	// BackendLegacy runs iptables-legacy, iptables-legacy-restore...
	BackendLegacy Backend = "legacy"
	// BackendNFT runs iptables-nft, iptables-nft-restore...
	BackendNFT Backend = "nft"
	// BackendNFTables keeps vxbridge's own nftables tables (ip and ip6
	// vxbridge) through nf_tables netlink, no iptables program: for docker's
	// --firewall-backend=nftables, which makes no iptables chains at all.
	BackendNFTables Backend = "nftables"
)

// command is the program name of the backend for a family; suffix is "",
// "-save" or "-restore".
func (b Backend) command(ipv6 bool, suffix string) string {
	name := "iptables"
	if ipv6 {
		name = "ip6tables"
	}
	switch b {
	case BackendLegacy, BackendNFT:
		name += "-" + string(b)
	}
	return name + suffix
}

// ParseBackend reads the --iptables-backend value: auto, legacy, nft,
// nftables or path. auto is returned as "" for the caller to Detect.
func ParseBackend(s string) (Backend, error) {
	switch s {
	case "auto":
		return "", nil
	case string(BackendLegacy), string(BackendNFT), string(BackendNFTables), string(BackendPath):
		return Backend(s), nil
	}
	return "", fmt.Errorf("firewall backend %q: want auto, legacy, nft, nftables or path", s)
}

// Detection is Detect's answer.
type Detection struct {
	Backend Backend
	Reason  string
	// Final: docker's chains were found (or the programs to look are
	// missing), so looking again cannot change the answer. Not final means
	// docker has not made its chains yet: a managed plugin starts before
	// dockerd sets up its firewall at boot.
	Final bool
}

// Detect picks the backend that holds docker's firewall: its nftables
// tables (docker's --firewall-backend=nftables), or its chains, read with
// iptables-legacy-save and iptables-nft-save (no -t: listing only loaded
// tables never loads a kernel module). It falls back to BackendPath, with
// the reason, when the programs are missing or the answer is not clear.
func Detect() Detection {
	docker, err := DockerNFTables()
	return decideBackend(runSave(BackendLegacy), runSave(BackendNFT), nftTablesResult{docker, err})
}

// saveResult is one backend's iptables-save output, or why there is none.
type saveResult struct {
	out string
	err error
}

// nftTablesResult says whether docker's nftables tables are there, or why
// nf_tables could not be read.
type nftTablesResult struct {
	docker bool
	err    error
}

func runSave(b Backend) saveResult {
	out, err := runProgram(defaultLimits, "", b.command(false, "-save"))
	return saveResult{out, err}
}

// decideBackend is Detect's pure part. Docker's nftables tables win unless
// iptables holds DOCKER-FORWARD, which docker 28+ makes in its iptables
// mode only: a daemon started in iptables mode deletes the tables of its
// nftables mode, while one started in nftables mode may leave DOCKER-USER
// (and its jump) behind.
func decideBackend(legacy, nft saveResult, tables nftTablesResult) Detection {
	if tables.docker && !hasChain(legacy.out, "DOCKER-FORWARD") && !hasChain(nft.out, "DOCKER-FORWARD") {
		return Detection{BackendNFTables, "docker's nftables tables (docker-bridges) are there: docker runs --firewall-backend=nftables", true}
	}
	if legacy.err != nil || nft.err != nil {
		return Detection{BackendPath, fmt.Sprintf("iptables-legacy-save/iptables-nft-save not usable (%v / %v): using iptables from PATH", legacy.err, nft.err), true}
	}
	inLegacy, inNFT := HasDockerChains(legacy.out), HasDockerChains(nft.out)
	switch {
	case inLegacy && !inNFT:
		return Detection{BackendLegacy, "docker's chains are in iptables-legacy", true}
	case inNFT && !inLegacy:
		return Detection{BackendNFT, "docker's chains are in iptables-nft", true}
	case inLegacy && inNFT:
		// Both: the one with more rules is the live one (kube's iptables
		// wrapper makes the same call).
		if countRules(legacy.out) > countRules(nft.out) {
			return Detection{BackendLegacy, "docker's chains are in both; iptables-legacy holds more rules", true}
		}
		return Detection{BackendNFT, "docker's chains are in both; iptables-nft holds at least as many rules", true}
	}
	reason := "no docker chains in either iptables backend nor docker's nftables tables yet: using iptables from PATH"
	if tables.err != nil {
		reason += fmt.Sprintf(" (nf_tables not readable: %v)", tables.err)
	}
	return Detection{BackendPath, reason, false}
}

// HasDockerChains says whether iptables-save output declares docker's
// filter chains (DOCKER-USER or DOCKER).
func HasDockerChains(save string) bool {
	return hasChain(save, "DOCKER-USER") || hasChain(save, "DOCKER")
}

// hasChain says whether iptables-save output declares chain.
func hasChain(save, chain string) bool {
	for _, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(line, ":"+chain+" ") {
			return true
		}
	}
	return false
}

func countRules(save string) int {
	n := 0
	for _, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(line, "-A ") {
			n++
		}
	}
	return n
}

// Backend is the backend the firewall runs.
func (fw *Firewall) Backend() Backend {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.families[0].backend
}

// SwitchBackend moves vxbridge to backend b: every rule of this owner is
// removed from the backend in use, with our chains and jumps when no other
// owner's rule is left there, and b's programs run from now on. The caller
// then reconciles, which writes the rules into b. Switching to the backend
// in use changes nothing.
func (fw *Firewall) SwitchBackend(b Backend) error {
	fresh, err := NewWithBackend(b)
	if err != nil {
		return fmt.Errorf("switch to firewall backend %s: %w", b, err)
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.families[0].backend == b {
		return nil
	}
	for _, f := range fw.families {
		if f.err != nil {
			continue
		}
		if err := fw.syncFamily(f, syncRequest{owns: func(line string) bool {
			_, _, tagged := lineOwner(line)
			return !tagged || fw.mine(line)
		}, guard: &guardWant{}}); err != nil {
			return fmt.Errorf("remove vxbridge chains from %s before switching to %s: %w", f, b, err)
		}
	}
	// The VTEP sets go with the rule that named them (a set left behind,
	// say one another rule still names, filters nothing: not worth failing
	// the switch); the next Reconcile makes b's, then the rule in b.
	_ = fw.destroyVTEPSets()
	fw.families = fresh.families
	fw.guardSets, fw.guardPort = false, 0
	return nil
}

// PathBackend is the backend `iptables` in PATH runs, from `iptables -V`
// ("iptables v1.8.9 (nf_tables)"); BackendPath when it cannot tell.
func PathBackend() Backend {
	out, err := runProgram(defaultLimits, "", "iptables", "-V")
	if err != nil {
		return BackendPath
	}
	return versionBackend(out)
}

func versionBackend(version string) Backend {
	switch {
	case strings.Contains(version, "(nf_tables)"):
		return BackendNFT
	case strings.Contains(version, "(legacy)"):
		return BackendLegacy
	}
	return BackendPath
}
