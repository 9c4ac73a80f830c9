package firewall

import (
	"encoding/binary"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// decodeRule reads a rule of vxbridge's nftables table back into the spec
// renderRule made it from (the arguments after "-A CHAIN"). ok is false for
// expressions renderRule does not make: someone else's rule in our table,
// which the plan then deletes as it deletes a stray line in our iptables
// chains.
func decodeRule(ipv6 bool, exprs []expr.Any, udata []byte) (spec []string, ok bool) {
	d := &ruleDecoder{ipv6: ipv6, exprs: exprs}
	if c, found := userdata.GetString(udata, userdata.TypeComment); found {
		d.comment = c
	}
	for d.i < len(d.exprs) {
		if !d.step() {
			return nil, false
		}
	}
	return d.spec, d.done
}

type ruleDecoder struct {
	ipv6    bool
	exprs   []expr.Any
	i       int
	spec    []string
	proto   string
	comment string
	done    bool // the target was read
}

// at returns expression i+k if it is of type T.
func at[T expr.Any](d *ruleDecoder, k int) (T, bool) {
	var zero T
	if d.i+k >= len(d.exprs) {
		return zero, false
	}
	e, ok := d.exprs[d.i+k].(T)
	return e, ok
}

// cmpAt returns the comparison at expression i+k and whether it negates.
func cmpAt(d *ruleDecoder, k int) (c *expr.Cmp, neg, ok bool) {
	c, ok = at[*expr.Cmp](d, k)
	if !ok || c.Op != expr.CmpOpEq && c.Op != expr.CmpOpNeq {
		return nil, false, false
	}
	return c, c.Op == expr.CmpOpNeq, true
}

func (d *ruleDecoder) emit(neg bool, words ...string) {
	if neg {
		d.spec = append(d.spec, "!")
	}
	d.spec = append(d.spec, words...)
}

// step reads the match or target at d.i.
func (d *ruleDecoder) step() bool {
	if d.done {
		return false // nothing follows a target
	}
	switch e := d.exprs[d.i].(type) {
	case *expr.Meta:
		return d.meta(e)
	case *expr.Payload:
		if e.Base == expr.PayloadBaseTransportHeader {
			return d.port(e)
		}
		if _, ok := at[*expr.Lookup](d, 1); ok {
			return d.lookup(e)
		}
		return d.addr(e)
	case *expr.Ct:
		return d.ctstate()
	case *expr.Fib:
		c, neg, ok := cmpAt(d, 1)
		if !ok || neg || !e.FlagDADDR || !e.ResultADDRTYPE || len(c.Data) != 4 || binary.NativeEndian.Uint32(c.Data) != unix.RTN_LOCAL {
			return false
		}
		d.emit(false, "-m", "addrtype", "--dst-type", "LOCAL")
		d.i += 2
		return true
	case *expr.Match:
		return d.physdev(e)
	case *expr.Counter:
		d.i++
		return true
	}
	return d.target()
}

func (d *ruleDecoder) meta(m *expr.Meta) bool {
	c, neg, ok := cmpAt(d, 1)
	if !ok {
		return false
	}
	d.i += 2
	switch m.Key {
	case expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME:
		opt := "-i"
		if m.Key == expr.MetaKeyOIFNAME {
			opt = "-o"
		}
		name := string(c.Data)
		if len(c.Data) == unix.IFNAMSIZ {
			name = strings.TrimRight(name, "\x00")
		} else {
			name += "+"
		}
		d.emit(neg, opt, name)
		return true
	case expr.MetaKeyL4PROTO:
		if len(c.Data) != 1 || protoNames[c.Data[0]] == "" {
			return false
		}
		d.proto = protoNames[c.Data[0]]
		d.emit(neg, "-p", d.proto)
		return true
	}
	return false
}

func (d *ruleDecoder) addr(p *expr.Payload) bool {
	src, dst, length := addrOffsets(d.ipv6)
	if p.Base != expr.PayloadBaseNetworkHeader || p.Len != length || p.Offset != src && p.Offset != dst {
		return false
	}
	bits := int(length * 8)
	k := 1
	if b, ok := at[*expr.Bitwise](d, 1); ok {
		bits = maskBits(b.Mask)
		k = 2
	}
	c, neg, ok := cmpAt(d, k)
	if !ok {
		return false
	}
	a, ok := netip.AddrFromSlice(c.Data)
	if !ok || bits < 0 {
		return false
	}
	opt := "-s"
	if p.Offset == dst {
		opt = "-d"
	}
	d.emit(neg, opt, netip.PrefixFrom(a, bits).String())
	d.i += k + 1
	return true
}

// maskBits is the prefix length of a contiguous mask, -1 if it is not one.
func maskBits(mask []byte) int {
	n := 0
	for _, b := range mask {
		for bit := 7; bit >= 0; bit-- {
			if b&(1<<bit) == 0 {
				return checkRest(mask, n)
			}
			n++
		}
	}
	return n
}

func checkRest(mask []byte, n int) int {
	for i := n; i < len(mask)*8; i++ {
		if mask[i/8]&(0x80>>(i%8)) != 0 {
			return -1
		}
	}
	return n
}

func (d *ruleDecoder) port(p *expr.Payload) bool {
	c, neg, ok := cmpAt(d, 1)
	if !ok || neg || d.proto == "" || p.Len != 2 || len(c.Data) != 2 || p.Offset > 2 || p.Offset == 1 {
		return false
	}
	opt := "--sport"
	if p.Offset == 2 {
		opt = "--dport"
	}
	// iptables names the module once for all its options.
	if n := len(d.spec); n < 2 || d.spec[n-2] != "--sport" && d.spec[n-2] != "--dport" {
		d.emit(false, "-m", d.proto)
	}
	d.emit(false, opt, strconv.Itoa(int(binary.BigEndian.Uint16(c.Data))))
	d.i += 2
	return true
}

// ctstate reads one or two ct state/status tests (ctstate's rendering)
// back into one --ctstate list.
func (d *ruleDecoder) ctstate() bool {
	var words []string
	var polarity []bool
	for {
		ct, ok := at[*expr.Ct](d, 0)
		if !ok {
			break
		}
		b, bok := at[*expr.Bitwise](d, 1)
		c, anySet, cok := cmpAt(d, 2)
		if !bok || !cok || ct.Key != expr.CtKeySTATE && ct.Key != expr.CtKeySTATUS || len(b.Mask) != 4 ||
			!sameBytes(c.Data, make([]byte, 4)) {
			return false
		}
		bits := binary.NativeEndian.Uint32(b.Mask)
		for _, s := range ctStates {
			if s.status == (ct.Key == expr.CtKeySTATUS) && bits&s.bit != 0 {
				bits &^= s.bit
				words = append(words, s.name)
			}
		}
		if bits != 0 {
			return false
		}
		polarity = append(polarity, !anySet) // "== 0": none of them, a negated list
		d.i += 3
	}
	if len(polarity) == 2 && (polarity[0] != polarity[1] || !polarity[0]) {
		return false // renderRule makes two tests for a negated list only
	}
	// Print in iptables' order, whatever the order of the keys.
	var ordered []string
	for _, s := range ctStates {
		for _, w := range words {
			if w == s.name {
				ordered = append(ordered, w)
			}
		}
	}
	d.emit(false, "-m", "conntrack")
	d.emit(polarity[0], "--ctstate", strings.Join(ordered, ","))
	return true
}

func (d *ruleDecoder) physdev(m *expr.Match) bool {
	info, ok := m.Info.(*xt.Unknown)
	if m.Name != "physdev" || !ok {
		return false
	}
	for _, neg := range []bool{false, true} {
		if sameBytes(*info, physdevBridged(neg)) {
			d.emit(false, "-m", "physdev")
			d.emit(neg, "--physdev-is-bridged")
			d.i++
			return true
		}
	}
	return false
}

// target reads the verdict or NAT that ends a rule, with the comment
// before it as iptables prints it.
func (d *ruleDecoder) target() bool {
	if d.comment != "" {
		d.spec = append(d.spec, "-m", "comment", "--comment", d.comment)
	}
	switch e := d.exprs[d.i].(type) {
	case *expr.Verdict:
		words := map[expr.VerdictKind]string{expr.VerdictAccept: "ACCEPT", expr.VerdictDrop: "DROP", expr.VerdictReturn: "RETURN"}
		switch {
		case words[e.Kind] != "":
			d.spec = append(d.spec, "-j", words[e.Kind])
		case e.Kind == expr.VerdictJump:
			_, chain, ok := iptablesChain(e.Chain)
			if !ok {
				return false
			}
			d.spec = append(d.spec, "-j", chain)
		default:
			return false
		}
		d.i++
	case *expr.Masq:
		d.spec = append(d.spec, "-j", "MASQUERADE")
		d.i++
	case *expr.Immediate:
		if _, ok := at[*expr.Redir](d, 1); ok {
			if !d.redirect() {
				return false
			}
		} else if !d.nat() {
			return false
		}
	default:
		return false
	}
	d.done = true
	return true
}

// nat reads nat's rendering: immediate address, [immediate port], nat.
func (d *ruleDecoder) nat() bool {
	addr, _ := at[*expr.Immediate](d, 0)
	a, ok := netip.AddrFromSlice(addr.Data)
	if !ok || a.Is6() != d.ipv6 {
		return false
	}
	k, port := 1, uint16(0)
	if p, ok := at[*expr.Immediate](d, 1); ok {
		if len(p.Data) != 2 {
			return false
		}
		k, port = 2, binary.BigEndian.Uint16(p.Data)
	}
	n, ok := at[*expr.NAT](d, k)
	if !ok {
		return false
	}
	to := a.String()
	if port != 0 {
		to = netip.AddrPortFrom(a, port).String()
	}
	switch n.Type {
	case expr.NATTypeDestNAT:
		d.spec = append(d.spec, "-j", "DNAT", "--to-destination", to)
	case expr.NATTypeSourceNAT:
		d.spec = append(d.spec, "-j", "SNAT", "--to-source", to)
	default:
		return false
	}
	d.i += k + 1
	return true
}
