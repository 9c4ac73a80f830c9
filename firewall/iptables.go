package firewall

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// ErrIPv6Unavailable classifies the error of a network that needs IPv6 rules
// on a host where ip6tables cannot be used.
var ErrIPv6Unavailable = errors.New("ip6tables is not usable on this host")

// family runs one address family's iptables binaries. Reads are one
// `iptables -S` per table; every change is one iptables-restore --noflush.
type family struct {
	ipv6    bool
	backend Backend
	list    string // path of iptables / ip6tables
	restore string // path of iptables-restore / ip6tables-restore
	err     error  // non-nil: the family cannot be used, and why
}

func (f *family) String() string { return f.backend.command(f.ipv6, "") }

// newFamily finds the binaries and checks, with go-iptables, that they run
// and are recent enough (iptables-restore --wait needs 1.6.2). The probe
// reads the filter table of the calling thread's network namespace.
func newFamily(ipv6 bool, b Backend) *family {
	f := &family{ipv6: ipv6, backend: b}
	proto := iptables.ProtocolIPv4
	if ipv6 {
		proto = iptables.ProtocolIPv6
	}
	f.err = f.probe(proto)
	if f.err != nil && ipv6 {
		f.err = fmt.Errorf("%w: %w", ErrIPv6Unavailable, f.err)
	}
	return f
}

func (f *family) probe(proto iptables.Protocol) error {
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Path(f.String()))
	if err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	if v1, v2, v3 := ipt.GetIptablesVersion(); v1 < 1 || v1 == 1 && (v2 < 6 || v2 == 6 && v3 < 2) {
		return fmt.Errorf("%s %d.%d.%d is too old: vxbridge needs 1.6.2 or newer", f, v1, v2, v3)
	}
	if _, err := ipt.ChainExists(tableFilter, "FORWARD"); err != nil {
		return fmt.Errorf("%s: list FORWARD: %w", f, err)
	}
	if f.list, err = exec.LookPath(f.String()); err != nil {
		return err
	}
	if f.restore, err = exec.LookPath(f.backend.command(f.ipv6, "-restore")); err != nil {
		return err
	}
	return nil
}

// read lists the filter and nat tables.
func (f *family) read() (familyState, error) {
	st := familyState{}
	for _, table := range []string{tableFilter, tableNat} {
		var out, stderr bytes.Buffer
		cmd := exec.Command(f.list, "-w", "-t", table, "-S")
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("%s -t %s -S: %w: %s", f, table, err, strings.TrimSpace(stderr.String()))
		}
		st[table] = parseTable(out.String())
	}
	return st, nil
}

// apply feeds script to iptables-restore --noflush. On failure the error
// quotes the line iptables-restore refused.
func (f *family) apply(script string) error {
	var stderr bytes.Buffer
	cmd := exec.Command(f.restore, "-w", "--noflush")
	cmd.Stdin, cmd.Stderr = strings.NewReader(script), &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.Join(strings.Fields(stderr.String()), " ")
		if line := failedLine(msg, script); line != "" {
			return fmt.Errorf("%s-restore refused %q: %w: %s", f, line, err, msg)
		}
		return fmt.Errorf("%s-restore: %w: %s", f, err, msg)
	}
	return nil
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
