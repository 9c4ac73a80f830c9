package firewall

import (
	"errors"
	"strings"
	"testing"
)

const (
	saveDocker = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:DOCKER - [0:0]\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\nCOMMIT\n"
	saveEmpty  = ""
	saveOther  = "*filter\n:INPUT ACCEPT [0:0]\n:DOCKERISH - [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n"
)

func TestDecideBackend(t *testing.T) {
	bigger := saveDocker + "-A DOCKER -j RETURN\n-A DOCKER -j RETURN\n"
	for _, tc := range []struct {
		name         string
		legacy, nft  saveResult
		tables       nftTablesResult
		want         Backend
		final        bool
		reasonSubstr string
	}{
		{"docker on nft", saveResult{out: saveEmpty}, saveResult{out: saveDocker}, nftTablesResult{}, BackendNFT, true, "iptables-nft"},
		{"docker on legacy", saveResult{out: saveDocker}, saveResult{out: saveOther}, nftTablesResult{}, BackendLegacy, true, "iptables-legacy"},
		{"both, legacy bigger", saveResult{out: bigger}, saveResult{out: saveDocker}, nftTablesResult{}, BackendLegacy, true, "more rules"},
		{"both, same", saveResult{out: saveDocker}, saveResult{out: saveDocker}, nftTablesResult{}, BackendNFT, true, "at least as many"},
		{"no docker yet", saveResult{out: saveOther}, saveResult{out: saveEmpty}, nftTablesResult{}, BackendPath, false, "no docker chains"},
		{"no legacy tool", saveResult{err: errors.New("not found")}, saveResult{out: saveDocker}, nftTablesResult{}, BackendPath, true, "not usable"},
		// Docker's nftables mode: no docker chain, or DOCKER-USER left from
		// its iptables mode, and no iptables programs needed.
		{"docker on nftables", saveResult{out: saveOther}, saveResult{out: saveEmpty}, nftTablesResult{docker: true}, BackendNFTables, true, "firewall-backend=nftables"},
		{"nftables, DOCKER-USER left", saveResult{out: saveEmpty}, saveResult{out: saveDocker}, nftTablesResult{docker: true}, BackendNFTables, true, "docker-bridges"},
		{"nftables, no iptables", saveResult{err: errors.New("not found")}, saveResult{err: errors.New("not found")}, nftTablesResult{docker: true}, BackendNFTables, true, "docker-bridges"},
		// Docker 28+'s iptables mode makes DOCKER-FORWARD: a docker-bridges
		// table beside it is stale.
		{"iptables mode, stale tables", saveResult{out: saveEmpty}, saveResult{out: saveDocker + ":DOCKER-FORWARD - [0:0]\n"}, nftTablesResult{docker: true}, BackendNFT, true, "iptables-nft"},
		{"nf_tables unreadable", saveResult{out: saveOther}, saveResult{out: saveEmpty}, nftTablesResult{err: errors.New("EPERM")}, BackendPath, false, "EPERM"},
	} {
		got := decideBackend(tc.legacy, tc.nft, tc.tables)
		if got.Backend != tc.want || got.Final != tc.final || !strings.Contains(got.Reason, tc.reasonSubstr) {
			t.Errorf("%s: %+v, want %q final %v (%q)", tc.name, got, tc.want, tc.final, tc.reasonSubstr)
		}
	}
}

func TestBackendCommands(t *testing.T) {
	for _, tc := range []struct {
		b      Backend
		v6     bool
		suffix string
		want   string
	}{
		{BackendPath, false, "", "iptables"},
		{BackendPath, true, "-restore", "ip6tables-restore"},
		{BackendLegacy, false, "-restore", "iptables-legacy-restore"},
		{BackendNFT, true, "-save", "ip6tables-nft-save"},
	} {
		if got := tc.b.command(tc.v6, tc.suffix); got != tc.want {
			t.Errorf("%q.command(%v, %q) = %q, want %q", tc.b, tc.v6, tc.suffix, got, tc.want)
		}
	}
	for in, want := range map[string]Backend{"auto": "", "legacy": BackendLegacy, "nft": BackendNFT, "nftables": BackendNFTables, "path": BackendPath} {
		if got, err := ParseBackend(in); err != nil || got != want {
			t.Errorf("ParseBackend(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseBackend("iptables"); err == nil || !strings.Contains(err.Error(), `"iptables"`) {
		t.Errorf("ParseBackend(iptables): %v", err)
	}
}

func TestVersionBackend(t *testing.T) {
	for in, want := range map[string]Backend{
		"iptables v1.8.9 (nf_tables)\n": BackendNFT,
		"iptables v1.8.7 (legacy)\n":    BackendLegacy,
		"iptables v1.6.1\n":             BackendPath,
	} {
		if got := versionBackend(in); got != want {
			t.Errorf("versionBackend(%q) = %q, want %q", in, got, want)
		}
	}
}
