package firewall

// The nftables form of two rules the plain matches and targets of
// nft_rules.go do not cover: the VXLAN port rule's VTEP set (guard.go) and
// the DNS redirects of cross-host networks (rules.go's namesRules).
//
//	-m set [!] --match-set S src   payload load of the source address, lookup
//	                               in set S of vxbridge's own table (only the
//	                               VTEP set of the rule's family: an ipset is
//	                               not reachable from nf_tables, so in
//	                               nftables mode the VTEPs are an nftables set
//	                               of the table, nft_sets_linux.go)
//	-j REDIRECT --to-ports N       immediate load of the port, redir

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// matchSet renders --match-set NAME src.
func (r *ruleRenderer) matchSet(neg bool) error {
	name, err := r.next()
	if err != nil {
		return err
	}
	if name != vtepSet(r.ipv6) {
		return fmt.Errorf("set %q: only %s", name, vtepSet(r.ipv6))
	}
	if dir, err := r.next(); err != nil || dir != "src" {
		return fmt.Errorf("--match-set %s %q: only src", name, dir)
	}
	src, _, length := addrOffsets(r.ipv6)
	r.exprs = append(r.exprs, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: src, Len: length},
		&expr.Lookup{SourceRegister: 1, SetName: name, Invert: neg})
	return nil
}

// redirect renders REDIRECT --to-ports N: the port in register 1.
func (r *ruleRenderer) redirect() error {
	if opt, err := r.next(); err != nil || opt != "--to-ports" {
		return fmt.Errorf("REDIRECT wants --to-ports")
	}
	s, err := r.next()
	if err != nil {
		return err
	}
	port, err := strconv.ParseUint(s, 10, 16)
	if err != nil || port == 0 {
		return fmt.Errorf("--to-ports %q: want one port", s)
	}
	r.exprs = append(r.exprs, &expr.Immediate{Register: 1, Data: binary.BigEndian.AppendUint16(nil, uint16(port))},
		&expr.Redir{RegisterProtoMin: 1})
	return nil
}

// lookup reads matchSet's rendering back.
func (d *ruleDecoder) lookup(p *expr.Payload) bool {
	src, _, length := addrOffsets(d.ipv6)
	l, ok := at[*expr.Lookup](d, 1)
	if !ok || p.Base != expr.PayloadBaseNetworkHeader || p.Offset != src || p.Len != length || l.SourceRegister != 1 || l.IsDestRegSet || l.SetName != vtepSet(d.ipv6) {
		return false
	}
	d.emit(false, "-m", "set")
	d.emit(l.Invert, "--match-set", l.SetName, "src")
	d.i += 2
	return true
}

// redirect reads redirect's rendering back. The kernel lists the upper
// port's register and the flag a port range sets too.
func (d *ruleDecoder) redirect() bool {
	port, _ := at[*expr.Immediate](d, 0)
	rd, ok := at[*expr.Redir](d, 1)
	if !ok || port.Register != 1 || len(port.Data) != 2 || rd.RegisterProtoMin != 1 ||
		rd.RegisterProtoMax != 0 && rd.RegisterProtoMax != 1 || rd.Flags&^unix.NF_NAT_RANGE_PROTO_SPECIFIED != 0 {
		return false
	}
	d.spec = append(d.spec, "-j", "REDIRECT", "--to-ports", strconv.Itoa(int(binary.BigEndian.Uint16(port.Data))))
	d.i += 2
	return true
}
