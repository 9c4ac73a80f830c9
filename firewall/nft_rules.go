package firewall

// The nftables form of the rules: one model, two renderings. The desired
// rules (rules.go, ports.go, plan.go's jumps) are written once, as the
// arguments `iptables -S` prints; the nftables backend renders each of them
// into native nf_tables expressions (renderRule) and reads what it finds in
// its table back into the same text (decodeRule), so plan.go diffs both
// backends alike. Only what vxbridge's rules use is known here; anything
// else is refused by name, and TestNFTRendersEveryRule proves every rule
// the model makes renders and reads back to the same text.
//
// Matches, in the nf_tables expressions iptables-nft and nft use:
//
//	[!] -i/-o IF           meta iifname/oifname, cmp (a "+" suffix compares the prefix only)
//	[!] -s/-d PREFIX       payload load of the address, bitwise mask, cmp
//	-p PROTO               meta l4proto, cmp
//	-m PROTO --sport/--dport N   payload load of the port, cmp
//	-m conntrack [!] --ctstate L ct state (and ct status for SNAT, DNAT), bitwise, cmp
//	-m addrtype --dst-type LOCAL fib daddr type, cmp
//	-m physdev [!] --physdev-is-bridged  the xt physdev match (nf_tables has no
//	                       native match for "bridged by br_netfilter" in the ip
//	                       family; the kernel runs it through nft_compat)
//	-m comment --comment C the rule's comment (user data), as nft shows it
//	-m set --match-set S src  (nft_sets.go)
//
// Targets: ACCEPT, DROP, RETURN, a jump to a VXBRIDGE- chain of the table, MASQUERADE,
// DNAT --to-destination and SNAT --to-source (immediate loads and nat),
// REDIRECT --to-ports (nft_sets.go).
// Every rule gets a counter, as iptables-nft's do, so `nft list` shows what
// matched.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// nftChainName is the nftables name of iptables chain chain of table:
// one nftables table holds the chains of both, so the iptables table is
// part of the name (filter-FORWARD, nat-VXBRIDGE-DNAT), as docker names its
// base chains.
func nftChainName(table, chain string) string { return table + "-" + chain }

// iptablesChain reverses nftChainName.
func iptablesChain(name string) (table, chain string, ok bool) {
	table, chain, ok = strings.Cut(name, "-")
	if !ok || table != tableFilter && table != tableNat && table != tableMangle {
		return "", "", false
	}
	return table, chain, true
}

// chainPrefix starts the name of every chain vxbridge makes.
const chainPrefix = "VXBRIDGE-"

// ctStates are the --ctstate words in the order iptables prints them, with
// the bit each is in nftables: ct state for the first five, ct status for
// the NAT ones.
var ctStates = []struct {
	name   string
	status bool
	bit    uint32
}{
	{"INVALID", false, expr.CtStateBitINVALID},
	{"NEW", false, expr.CtStateBitNEW},
	{"RELATED", false, expr.CtStateBitRELATED},
	{"ESTABLISHED", false, expr.CtStateBitESTABLISHED},
	{"UNTRACKED", false, expr.CtStateBitUNTRACKED},
	{"SNAT", true, 1 << 4}, // IPS_SRC_NAT
	{"DNAT", true, 1 << 5}, // IPS_DST_NAT
}

var protoNames = map[uint8]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_SCTP: "sctp",
	unix.IPPROTO_ICMP: "icmp", unix.IPPROTO_ICMPV6: "ipv6-icmp"}

// physdevBridged is struct xt_physdev_info asking --physdev-is-bridged,
// negated or not, padded to XT_ALIGN (72 bytes): 4 interface names and
// masks of 16 bytes, invert, bitmask.
func physdevBridged(neg bool) []byte {
	const bridged = 0x04 // XT_PHYSDEV_OP_BRIDGED
	info := make([]byte, 72)
	info[65] = bridged
	if neg {
		info[64] = bridged
	}
	return info
}

// ruleRenderer turns one spec into expressions.
type ruleRenderer struct {
	ipv6     bool
	table    string
	spec     []string
	i        int
	neg      bool
	proto    string
	exprs    []expr.Any
	comment  string
	targeted bool // -j was read: it comes last
}

// renderRule renders a rule of table, given as its spec (the arguments
// after "-A CHAIN"), into nftables expressions and the comment.
func renderRule(ipv6 bool, table string, spec []string) ([]expr.Any, string, error) {
	r := &ruleRenderer{ipv6: ipv6, table: table, spec: spec}
	for r.i < len(spec) {
		if err := r.option(); err != nil {
			return nil, "", fmt.Errorf("nftables cannot express %q: %w", strings.Join(spec, " "), err)
		}
	}
	if !r.targeted {
		return nil, "", fmt.Errorf("nftables cannot express %q: no target (-j)", strings.Join(spec, " "))
	}
	return r.exprs, r.comment, nil
}

func (r *ruleRenderer) next() (string, error) {
	if r.i >= len(r.spec) {
		return "", fmt.Errorf("%q wants a value", r.spec[r.i-1])
	}
	r.i++
	return r.spec[r.i-1], nil
}

// option renders the option at r.i and what it takes.
func (r *ruleRenderer) option() error {
	opt, _ := r.next()
	if opt == "!" {
		r.neg = true
		return nil
	}
	neg := r.neg
	r.neg = false
	switch opt {
	case "-i", "-o":
		return r.iface(opt == "-o", neg)
	case "-s", "-d":
		return r.addr(opt == "-d", neg)
	case "-p":
		p, err := r.next()
		if err != nil {
			return err
		}
		num, ok := protoNumber(p)
		if !ok {
			return fmt.Errorf("protocol %q", p)
		}
		r.proto = p
		r.exprs = append(r.exprs, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmp(neg, []byte{num}))
		return nil
	case "-m":
		return r.module()
	case "--sport", "--dport":
		return r.port(opt == "--dport", neg)
	case "--ctstate":
		return r.ctstate(neg)
	case "--physdev-is-bridged":
		r.exprs = append(r.exprs, &expr.Match{Name: "physdev", Info: ptr(xt.Unknown(physdevBridged(neg)))})
		return nil
	case "--dst-type":
		t, err := r.next()
		if err != nil || t != "LOCAL" || neg {
			return fmt.Errorf("--dst-type %q: only LOCAL", t)
		}
		r.exprs = append(r.exprs, &expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			cmp(false, binary.NativeEndian.AppendUint32(nil, unix.RTN_LOCAL)))
		return nil
	case "--match-set":
		return r.matchSet(neg)
	case "--comment":
		c, err := r.next()
		if err == nil && len(c) > nftCommentMax {
			return fmt.Errorf("comment of %d bytes, over %d", len(c), nftCommentMax)
		}
		r.comment = c
		return err
	case "-j":
		return r.target()
	}
	return fmt.Errorf("option %q", opt)
}

func ptr[T any](v T) *T { return &v }

func protoNumber(name string) (uint8, bool) {
	for n, p := range protoNames {
		if p == name {
			return n, true
		}
	}
	return 0, false
}

func cmp(neg bool, data []byte) *expr.Cmp {
	op := expr.CmpOpEq
	if neg {
		op = expr.CmpOpNeq
	}
	return &expr.Cmp{Op: op, Register: 1, Data: data}
}

// module checks the -m name: the options that follow render themselves.
func (r *ruleRenderer) module() error {
	m, err := r.next()
	if err != nil {
		return err
	}
	switch m {
	case "comment", "conntrack", "physdev", "addrtype", "set":
		return nil
	case "tcp", "udp", "sctp":
		if m != r.proto {
			return fmt.Errorf("-m %s after -p %q", m, r.proto)
		}
		return nil
	}
	return fmt.Errorf("module %q", m)
}

func (r *ruleRenderer) iface(out, neg bool) error {
	name, err := r.next()
	if err != nil {
		return err
	}
	key := expr.MetaKeyIIFNAME
	if out {
		key = expr.MetaKeyOIFNAME
	}
	r.exprs = append(r.exprs, &expr.Meta{Key: key, Register: 1}, cmp(neg, ifnameData(name)))
	return nil
}

// ifnameData is what an interface name is compared with: the name padded
// to IFNAMSIZ, or only the prefix before iptables' "+" wildcard.
func ifnameData(name string) []byte {
	if prefix, ok := strings.CutSuffix(name, "+"); ok {
		return []byte(prefix)
	}
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// addrOffsets are where the source and destination addresses sit in the
// network header, and their length.
func addrOffsets(ipv6 bool) (src, dst, length uint32) {
	if ipv6 {
		return 8, 24, 16
	}
	return 12, 16, 4
}

func (r *ruleRenderer) addr(dst, neg bool) error {
	s, err := r.next()
	if err != nil {
		return err
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Is6() != r.ipv6 {
		return fmt.Errorf("address %q", s)
	}
	src, dstOff, length := addrOffsets(r.ipv6)
	off := src
	if dst {
		off = dstOff
	}
	r.exprs = append(r.exprs, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: length})
	if p.Bits() < p.Addr().BitLen() {
		r.exprs = append(r.exprs, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: length,
			Mask: prefixMask(p), Xor: make([]byte, length)})
	}
	r.exprs = append(r.exprs, cmp(neg, p.Masked().Addr().AsSlice()))
	return nil
}

func prefixMask(p netip.Prefix) []byte {
	mask := make([]byte, p.Addr().BitLen()/8)
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return mask
}

func (r *ruleRenderer) port(dst, neg bool) error {
	s, err := r.next()
	if err != nil {
		return err
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || r.proto == "" || neg {
		return fmt.Errorf("port %q", s)
	}
	off := uint32(0)
	if dst {
		off = 2 // tcp, udp and sctp alike
	}
	r.exprs = append(r.exprs, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
		cmp(false, binary.BigEndian.AppendUint16(nil, uint16(n))))
	return nil
}

// ctstate renders a --ctstate list. Listed states match when any is set;
// negated, when none is. The states split over two keys, ct state and ct
// status: "none of them" is one test per key, "any of them" over both keys
// is not one conjunction, and no rule of ours needs it.
func (r *ruleRenderer) ctstate(neg bool) error {
	s, err := r.next()
	if err != nil {
		return err
	}
	var state, status uint32
	for _, w := range strings.Split(s, ",") {
		i := slices.IndexFunc(ctStates, func(c struct {
			name   string
			status bool
			bit    uint32
		}) bool {
			return c.name == w
		})
		switch {
		case i < 0:
			return fmt.Errorf("ctstate %q", w)
		case ctStates[i].status:
			status |= ctStates[i].bit
		default:
			state |= ctStates[i].bit
		}
	}
	if !neg && state != 0 && status != 0 {
		return fmt.Errorf("ctstate %q mixes ct state and ct status", s)
	}
	for _, k := range []struct {
		key  expr.CtKey
		bits uint32
	}{{expr.CtKeySTATE, state}, {expr.CtKeySTATUS, status}} {
		if k.bits == 0 {
			continue
		}
		// any bit set: != 0; negated, none set: == 0.
		r.exprs = append(r.exprs, &expr.Ct{Key: k.key, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binary.NativeEndian.AppendUint32(nil, k.bits), Xor: make([]byte, 4)},
			cmp(!neg, make([]byte, 4)))
	}
	return nil
}

// target renders -j and its options; it must come last.
func (r *ruleRenderer) target() error {
	t, err := r.next()
	if err != nil {
		return err
	}
	r.exprs = append(r.exprs, &expr.Counter{})
	r.targeted = true
	switch t {
	case "ACCEPT":
		r.exprs = append(r.exprs, &expr.Verdict{Kind: expr.VerdictAccept})
	case "DROP":
		r.exprs = append(r.exprs, &expr.Verdict{Kind: expr.VerdictDrop})
	case "RETURN":
		r.exprs = append(r.exprs, &expr.Verdict{Kind: expr.VerdictReturn})
	case "MASQUERADE":
		r.exprs = append(r.exprs, &expr.Masq{})
	case "DNAT", "SNAT":
		if err := r.nat(t); err != nil {
			return err
		}
	case "REDIRECT":
		if err := r.redirect(); err != nil {
			return err
		}
	default:
		// A jump: only to chains of ours, which live in the same table.
		if !strings.HasPrefix(t, chainPrefix) {
			return fmt.Errorf("target %q", t)
		}
		r.exprs = append(r.exprs, &expr.Verdict{Kind: expr.VerdictJump, Chain: nftChainName(r.table, t)})
	}
	if r.i < len(r.spec) {
		return fmt.Errorf("%q after the target", r.spec[r.i])
	}
	return nil
}

// nat renders DNAT --to-destination ADDR[:PORT] and SNAT --to-source
// ADDR[:PORT]: the address in register 1, the port in register 2.
func (r *ruleRenderer) nat(t string) error {
	want := map[string]string{"DNAT": "--to-destination", "SNAT": "--to-source"}[t]
	if opt, err := r.next(); err != nil || opt != want {
		return fmt.Errorf("%s wants %s", t, want)
	}
	s, err := r.next()
	if err != nil {
		return err
	}
	ap, perr := netip.ParseAddrPort(s)
	if perr != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return fmt.Errorf("%s %q", want, s)
		}
		ap = netip.AddrPortFrom(a, 0)
	}
	if ap.Addr().Is6() != r.ipv6 {
		return fmt.Errorf("%s %q: wrong family", want, s)
	}
	fam := uint32(unix.NFPROTO_IPV4)
	if r.ipv6 {
		fam = unix.NFPROTO_IPV6
	}
	nat := &expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: 1}
	if t == "SNAT" {
		nat.Type = expr.NATTypeSourceNAT
	}
	r.exprs = append(r.exprs, &expr.Immediate{Register: 1, Data: ap.Addr().AsSlice()})
	if ap.Port() != 0 {
		r.exprs = append(r.exprs, &expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, ap.Port())})
		nat.RegProtoMin, nat.Specified = 2, true
	}
	r.exprs = append(r.exprs, nat)
	return nil
}

// nftCommentMax is the longest comment a rule's user data holds: the
// kernel takes at most 256 bytes of it (NFT_USERDATA_MAXLEN), and the
// comment goes there as type, length, text and NUL. A longer one would
// wrap the one-byte length and read back as another comment (FuzzNFTRender
// found one); vxbridge's longest, a port rule's two ids, is 138 bytes.
const nftCommentMax = 256 - 3

// commentData is a comment as nft keeps it in a rule's user data.
func commentData(c string) []byte {
	if c == "" {
		return nil
	}
	return userdata.AppendString(nil, userdata.TypeComment, c)
}

// splitLine splits a rule line ("-A CHAIN spec...") into its words,
// reading xtables' quoting (see quote).
func splitLine(line string) []string {
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\\' && i+1 < len(line):
			i++
			w.WriteByte(line[i])
		case c == '"':
			quoted, inWord = !quoted, true
		case c == ' ' && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
			}
			inWord = false
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// sameBytes compares register data; nil and empty are alike.
func sameBytes(a, b []byte) bool { return bytes.Equal(a, b) }
