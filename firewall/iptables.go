package firewall

import (
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
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
	f := &family{ipv6: ipv6, backend: b, limits: defaultLimits}
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
	out, err := runProgram(f.limits, "", f.list, "--version")
	if err != nil {
		return err
	}
	if v := parseVersion(out); v[0] < 1 || v[0] == 1 && (v[1] < 6 || v[1] == 6 && v[2] < 2) {
		return fmt.Errorf("%s %d.%d.%d is too old: vxbridge needs 1.6.2 or newer", f, v[0], v[1], v[2])
	}
	if _, err := runProgram(f.limits, "", f.list, append(f.limits.waitArgs(), "-t", tableFilter, "-S", "FORWARD")...); err != nil {
		return fmt.Errorf("%s: list FORWARD: %w", f, err)
	}
	return nil
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
		out, err := runProgram(f.limits, "", f.list, append(f.limits.waitArgs(), "-t", table, "-S")...)
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
	_, err := runProgram(f.limits, script, f.restore, append(f.limits.waitArgs(), "--noflush")...)
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
