package firewall

import (
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ErrIPv6Unavailable classifies the error of a network that needs IPv6 rules
// on a host where ip6tables cannot be used.
var ErrIPv6Unavailable = errors.New("ip6tables (or nf_tables for IPv6) is not usable on this host")

// family holds one address family's rules: with the iptables backends it
// runs that family's iptables binaries (reads are one `iptables -S` per
// table, every change one iptables-restore --noflush); with BackendNFTables
// it keeps vxbridge's nftables table of that family (nft_linux.go).
type family struct {
	ipv6    bool
	backend Backend
	list    string    // path of iptables / ip6tables
	restore string    // path of iptables-restore / ip6tables-restore
	nft     *nftTable // BackendNFTables
	err     error     // non-nil: the family cannot be used, and why
	limits  limits    // bounds every program run (exec.go)
	// stalled bounds the runs after one that found iptables stuck (the
	// xtables lock held by another program, nf_tables hanging), until one
	// succeeds: every firewall operation runs under one lock, and the
	// driver's calls wait behind it, so each must fail fast while iptables
	// stays stuck rather than wait the whole limits again, one after the
	// other. Runs hold the Firewall's lock, which guards stuckSince.
	stalled    limits
	stuckSince time.Time // zero: not stuck
}

func (f *family) String() string {
	if f.nft != nil {
		return f.nft.String()
	}
	return f.backend.command(f.ipv6, "")
}

// newFamily finds the binaries and checks that they run and are recent
// enough (iptables-restore --wait needs 1.6.2). The probe reads the filter
// table of the calling thread's network namespace.
func newFamily(ipv6 bool, b Backend) *family {
	f := &family{ipv6: ipv6, backend: b, limits: defaultLimits, stalled: stalledLimits}
	if b == BackendNFTables {
		f.nft = &nftTable{ipv6: ipv6, timeout: nftTimeout}
		f.err = f.nft.probe()
	} else {
		f.err = f.probe()
	}
	if f.err != nil && ipv6 {
		f.err = fmt.Errorf("%w: %w", ErrIPv6Unavailable, f.err)
	}
	return f
}

func (f *family) probe() error {
	var err error
	if f.list, err = exec.LookPath(f.String()); err != nil {
		return err
	}
	if f.restore, err = exec.LookPath(f.backend.command(f.ipv6, "-restore")); err != nil {
		return err
	}
	out, err := f.run("", f.list, "--version")
	if err != nil {
		return err
	}
	if v := parseVersion(out); v[0] < 1 || v[0] == 1 && (v[1] < 6 || v[1] == 6 && v[2] < 2) {
		return fmt.Errorf("%s %d.%d.%d is too old: vxbridge needs 1.6.2 or newer", f, v[0], v[1], v[2])
	}
	if _, err := f.runLocking("", f.list, "-t", tableFilter, "-S", "FORWARD"); err != nil {
		return fmt.Errorf("%s: list FORWARD: %w", f, err)
	}
	return nil
}

// runLocking runs a program that takes the xtables lock (-w, as long as
// the limits in force say); run runs one that does not.
func (f *family) runLocking(stdin, name string, args ...string) (string, error) {
	return f.runWith(true, stdin, name, args...)
}

func (f *family) run(stdin, name string, args ...string) (string, error) {
	return f.runWith(false, stdin, name, args...)
}

// runWith runs a program within the family's limits, the stalled ones
// while iptables is stuck, and notes whether it is.
func (f *family) runWith(locking bool, stdin, name string, args ...string) (string, error) {
	lim := f.limits
	if !f.stuckSince.IsZero() {
		lim = f.stalled
	}
	if locking {
		args = append(lim.waitArgs(), args...)
	}
	out, err := runProgram(lim, stdin, name, args...)
	if !stuck(err) {
		f.stuckSince = time.Time{}
		return out, err
	}
	if f.stuckSince.IsZero() {
		f.stuckSince = time.Now()
	}
	return out, fmt.Errorf("iptables stuck since %s (the xtables lock held by another program, or nf_tables hanging); "+
		"until it is free, vxbridge waits %v for it: %w", f.stuckSince.Format(time.TimeOnly), f.stalled.lockWait, err)
}

// stuck says whether err is a run that found iptables stuck: killed at its
// deadline, or iptables' exit status 4 (RESOURCE_PROBLEM), which it
// returns when the xtables lock stays held past -w.
func stuck(err error) bool {
	var exit *exec.ExitError
	return errors.Is(err, ErrTimeout) || errors.As(err, &exit) && exit.ExitCode() == 4
}

var versionRE = regexp.MustCompile(`v(\d+)\.(\d+)\.(\d+)`)

// parseVersion reads `iptables --version` ("iptables v1.8.9 (nf_tables)");
// zeros when it cannot.
func parseVersion(out string) [3]int {
	var v [3]int
	if m := versionRE.FindStringSubmatch(out); m != nil {
		for i := range v {
			v[i], _ = strconv.Atoi(m[i+1])
		}
	}
	return v
}

// read lists the filter, nat and mangle tables.
func (f *family) read() (familyState, error) {
	if f.nft != nil {
		return f.nft.read()
	}
	st := familyState{}
	for _, table := range []string{tableFilter, tableNat, tableMangle} {
		out, err := f.runLocking("", f.list, "-t", table, "-S")
		if err != nil {
			return nil, err
		}
		st[table] = parseTable(out)
	}
	return st, nil
}

// applyScript makes the change s describes, in one transaction per table
// (iptables) or one batch for both (nftables). It follows a read: the
// nftables batch is planned on what that read found.
func (f *family) applyScript(s *restoreScript) error {
	if f.nft != nil {
		return f.nft.apply(s)
	}
	return f.apply(s.String())
}

// apply feeds script to iptables-restore --noflush. On failure the error
// quotes the line iptables-restore refused.
func (f *family) apply(script string) error {
	_, err := f.runLocking(script, f.restore, "--noflush")
	var perr *ProgramError
	if errors.As(err, &perr) {
		if line := failedLine(perr.Stderr, script); line != "" {
			return fmt.Errorf("%s-restore refused %q: %w", f, line, err)
		}
	}
	return err
}

var errorLineRE = regexp.MustCompile(`line:? (\d+)`)

// failedLine returns the script line iptables-restore's message points at.
func failedLine(msg, script string) string {
	m := errorLineRE.FindStringSubmatch(msg)
	if m == nil {
		return ""
	}
	n, _ := strconv.Atoi(m[1])
	lines := strings.Split(script, "\n")
	if n < 1 || n > len(lines) {
		return ""
	}
	return lines[n-1]
}
