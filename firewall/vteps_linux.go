package firewall

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The VXLAN port rule's VTEP sets, in the calling thread's network
// namespace, as the rules are: ipsets (hash:ip, kept over netlink) for the
// iptables backends, sets of vxbridge's own tables in nftables mode
// (nft_sets_linux.go), where rules cannot name an ipset.

// ensureVTEPSets makes the sets of the backend in use hold exactly g's
// VTEPs. fw.mu held.
func (fw *Firewall) ensureVTEPSets(g VXLANGuard) error {
	if !fw.nftables() {
		return ensureIPSets(g)
	}
	for _, f := range fw.families {
		if f.err != nil {
			continue // no rule of that family either
		}
		if err := f.nft.ensureSet(vtepSet(f.ipv6), g.vteps(f.ipv6)); err != nil {
			return err
		}
	}
	return nil
}

// destroyVTEPSets removes the sets of the backend in use; missing ones are
// success. No rule may name them any more. fw.mu held.
func (fw *Firewall) destroyVTEPSets() error {
	if !fw.nftables() {
		return destroyIPSets()
	}
	var errs []error
	for _, f := range fw.families {
		if f.err == nil {
			errs = append(errs, f.nft.dropSet(vtepSet(f.ipv6)))
		}
	}
	return errors.Join(errs...)
}

// nftables says whether the rules are in vxbridge's own nftables tables.
func (fw *Firewall) nftables() bool { return fw.families[0].nft != nil }

// ensureIPSets makes both families' ipsets exist and hold exactly g's
// VTEPs: new ones are added before old ones go, so a peer that stays is
// never dropped meanwhile.
func ensureIPSets(g VXLANGuard) error {
	for _, ipv6 := range []bool{false, true} {
		if err := ensureVTEPSet(vtepSet(ipv6), ipv6, g.vteps(ipv6)); err != nil {
			return err
		}
	}
	return nil
}

func ensureVTEPSet(name string, ipv6 bool, want []netip.Addr) error {
	family := uint8(unix.AF_INET)
	if ipv6 {
		family = unix.AF_INET6
	}
	err := netlink.IpsetCreate(name, "hash:ip", netlink.IpsetCreateOptions{Family: family, Replace: true})
	if err != nil {
		return fmt.Errorf("create ipset %s: %w", name, err)
	}
	cur, err := netlink.IpsetList(name)
	if err != nil {
		return fmt.Errorf("list ipset %s: %w", name, err)
	}
	if cur.TypeName != "hash:ip" || cur.Family != family {
		return fmt.Errorf("ipset %s is a %s set of family %d, not vxbridge's: delete it (ipset destroy %s) or stop what made it", name, cur.TypeName, cur.Family, name)
	}
	have := map[netip.Addr]bool{}
	for _, e := range cur.Entries {
		if a, ok := netip.AddrFromSlice(e.IP); ok {
			have[a.Unmap()] = true
		}
	}
	for _, v := range want {
		if !have[v] {
			if err := netlink.IpsetAdd(name, &netlink.IPSetEntry{IP: net.IP(v.AsSlice()), Replace: true}); err != nil {
				return fmt.Errorf("add %s to ipset %s: %w", v, name, err)
			}
		}
	}
	for v := range have {
		if !slices.Contains(want, v) {
			if err := netlink.IpsetDel(name, &netlink.IPSetEntry{IP: net.IP(v.AsSlice())}); err != nil {
				return fmt.Errorf("delete %s from ipset %s: %w", v, name, err)
			}
		}
	}
	return nil
}

// destroyIPSets removes both ipsets; missing ones are success.
func destroyIPSets() error {
	var errs []error
	for _, name := range []string{VTEPSet4, VTEPSet6} {
		if err := netlink.IpsetDestroy(name); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("destroy ipset %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
