package firewall

// The VXLAN port rule's VTEPs in nftables mode. nf_tables cannot look up
// an ipset, so there the VTEPs are a set of vxbridge's own table in each
// family (vxbridge-vtep4 in ip vxbridge, vxbridge-vtep6 in ip6 vxbridge),
// which the rule names (nft_sets.go). A table holding a set is not deleted
// with its last rule (nftBatch): the set goes when the VXLAN port rule
// goes (dropSet), and the table with it when nothing else is left.

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
)

// addrType is the set key type of the table's family.
func (t *nftTable) addrType() nftables.SetDatatype {
	if t.ipv6 {
		return nftables.TypeIP6Addr
	}
	return nftables.TypeIPAddr
}

// ensureSet makes the table's set name hold exactly want, making the table
// and the set when missing; the elements to add and those to delete go in
// one batch, so a VTEP that stays is never missing.
func (t *nftTable) ensureSet(name string, want []netip.Addr) error {
	l, err := t.list()
	if err != nil {
		return err
	}
	c, err := t.conn()
	if err != nil {
		return fmt.Errorf("update %s: %w", t, err)
	}
	set := &nftables.Set{Table: t.table(), Name: name, KeyType: t.addrType()}
	typ, found := l.sets[name]
	switch {
	case !found:
		if !l.exists {
			c.AddTable(t.table())
		}
		if err := c.AddSet(set, setElements(want)); err != nil {
			return fmt.Errorf("make set %s in %s: %w", name, t, err)
		}
	case typ != set.KeyType.Name:
		return fmt.Errorf("set %s of %s holds %s, not vxbridge's addresses: delete it (nft delete set %s) or stop what made it",
			name, t, typ, t.nftRef(name))
	default:
		have, err := c.GetSetElements(set)
		if err != nil {
			return fmt.Errorf("read set %s of %s: %w", name, t, err)
		}
		add, del := setChanges(have, want)
		if len(add)+len(del) == 0 {
			return nil
		}
		if err := t.changeSet(c, set, add, del); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("update set %s of %s: %w", name, t, err)
	}
	return nil
}

// changeSet queues adding add to set and deleting del from it.
func (t *nftTable) changeSet(c *nftables.Conn, set *nftables.Set, add, del []nftables.SetElement) error {
	if len(add) > 0 {
		if err := c.SetAddElements(set, add); err != nil {
			return fmt.Errorf("add to set %s of %s: %w", set.Name, t, err)
		}
	}
	if len(del) > 0 {
		if err := c.SetDeleteElements(set, del); err != nil {
			return fmt.Errorf("delete from set %s of %s: %w", set.Name, t, err)
		}
	}
	return nil
}

// dropSet deletes the table's set name, and the table when nothing else
// is left in it; a missing one is success. No rule may name the set.
func (t *nftTable) dropSet(name string) error {
	l, err := t.list()
	if err != nil {
		return err
	}
	if _, found := l.sets[name]; !found {
		return nil
	}
	c, err := t.conn()
	if err != nil {
		return fmt.Errorf("update %s: %w", t, err)
	}
	delete(l.sets, name)
	if l.empty() {
		c.DelTable(t.table())
	} else {
		c.DelSet(&nftables.Set{Table: t.table(), Name: name})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete set %s of %s: %w", name, t, err)
	}
	return nil
}

// nftRef is how nft names set name of the table.
func (t *nftTable) nftRef(name string) string {
	if t.ipv6 {
		return "ip6 " + NFTTable + " " + name
	}
	return "ip " + NFTTable + " " + name
}

func setElements(addrs []netip.Addr) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, nftables.SetElement{Key: a.AsSlice()})
	}
	return out
}

// setChanges are the elements to add to a set holding have so it holds
// want, and those to delete.
func setChanges(have []nftables.SetElement, want []netip.Addr) (add, del []nftables.SetElement) {
	wanted := make(map[netip.Addr]bool, len(want))
	for _, a := range want {
		wanted[a] = true
	}
	held := make(map[netip.Addr]bool, len(have))
	for _, e := range have {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok || !wanted[a] || held[a] {
			del = append(del, nftables.SetElement{Key: e.Key})
			continue
		}
		held[a] = true
	}
	for _, a := range want {
		if !held[a] {
			add = append(add, nftables.SetElement{Key: a.AsSlice()})
		}
	}
	return add, del
}
