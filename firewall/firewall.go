package firewall

// Design notes.
//
// Docker's iptables firewall (its default): docker 28+ sets the FORWARD
// policy to DROP when it runs its docker0 bridge and turned forwarding on
// itself (with --bridge=none the policy stays ACCEPT); 20.10 sets it
// whenever it enables forwarding. With br_netfilter loaded (docker loads it
// when it needs it), every frame crossing a bridge of the host's
// namespace, even between two ports of one bridge, passes iptables
// FORWARD. vxbridge owns four chains per family, and a fifth while a port
// is published (see ports.go):
//
//	filter FORWARD -> VXBRIDGE-FORWARD      ACCEPTs only; first rule jumps to
//	                  VXBRIDGE-ISOLATION    DROPs only
//	mangle FORWARD -> VXBRIDGE-DOCKER       DROPs only (the docker guard)
//	nat POSTROUTING -> VXBRIDGE-POSTROUTING MASQUERADEs only
//	nat PREROUTING, OUTPUT -> VXBRIDGE-DNAT DNATs only
//
// One verdict per chain makes the order of network rules irrelevant, so a
// chain's desired content is a set and reconciling is a set difference done
// on the text `iptables -S` prints (Rule.Line is written in that form).
// Every network rule carries the comment "vxbridge:<network id>": rules are
// attributed to networks without any state of our own.
//
// Docker's nftables firewall (--firewall-backend=nftables, docker 29+):
// docker keeps its rules in tables of its own (ip and ip6 docker-bridges)
// and makes no iptables chain at all. vxbridge then keeps the same rules in
// tables of its own (ip and ip6 vxbridge, BackendNFTables), rendered from
// the same model into native nf_tables expressions (nft_rules.go), planned
// by the same code and applied as one netlink batch (nft_plan.go); where
// its base chains sit, and why an operator's drop still decides first, is
// at the top of nft_linux.go.
//
// Where the FORWARD jump sits (iptables): FORWARD first jumps to
// DOCKER-USER, docker's chain for operators' rules, then (docker 28+) to
// DOCKER-FORWARD, which jumps to DOCKER-CT (replies into docker's
// bridges), DOCKER-INTERNAL and DOCKER-BRIDGE and ends in `-i docker0 -j
// ACCEPT`, one per docker network. Docker 20.10 instead keeps its
// per-network ACCEPTs in FORWARD itself, below its DOCKER-ISOLATION-STAGE-1
// jump (gone since docker 28). Either way a docker rule like `-i docker0
// -j ACCEPT` above us lets docker0's containers into vxbridge networks, so
// our jump belongs right after DOCKER-USER (operators' rules keep
// precedence) and above everything else but 20.10's isolation jump, which
// only drops or returns. Docker puts its jumps back at the top of FORWARD
// whenever it starts (20.10 also when it creates a network); Reconcile and
// EnsureJumps move ours back above them, within milliseconds where the
// nf_tables watch sees the change (iptables-nft), at the next
// --reconcile-interval otherwise (iptables-legacy). Until then docker's
// ACCEPTs decide first, so the one thing docker would let through, its
// containers opening connections into vxbridge networks, is dropped earlier
// still: the docker guard sits in mangle FORWARD, which runs before filter
// FORWARD and where docker puts nothing, so no order docker leaves there
// matters (e2e TestFirewallOrderAcrossDockerdRestart sends traffic through
// a dockerd restart). The price: an operator's ACCEPT in DOCKER-USER cannot
// open a vxbridge network to docker's containers, as in nftables mode.
//
// Isolation, per network bridge b, all in VXBRIDGE-ISOLATION: an inbound
// guard drops anything entering b from another interface unless it is a
// reply or DNAT'ed (a published port); an outbound guard drops b's new
// connections into docker's bridges. Two vxbridge networks are kept apart by
// each other's inbound guard. The host's own traffic (INPUT, OUTPUT) is not
// filtered.
//
// Every change is one iptables-restore --noflush transaction per table: a
// changed chain is declared (which flushes it) and refilled, and a misplaced
// jump is deleted and re-inserted, atomically. Traffic never sees a chain
// half built, the isolation rules missing while the ACCEPTs are there, or no
// jump at all. When nothing changed an operation costs three listings per
// family (filter, nat, mangle). When no network rule is left in a family, its jumps and chains
// are removed, so iptables-save shows what it showed before the first
// network (iptables-nft may keep the mangle table it made, empty).

import (
	"fmt"
	"sync"
)

// Firewall owns vxbridge's chains (iptables) or tables (nftables) in both
// families. It applies its rules to the network namespace of the calling
// thread.
type Firewall struct {
	mu       sync.Mutex // one operation at a time
	families []*family  // IPv4, IPv6
}

// New finds iptables and ip6tables and checks that they work. Without a
// usable iptables it fails; without ip6tables only networks with IPv6
// subnets fail (ErrIPv6Unavailable).
func New() (*Firewall, error) { return NewWithBackend(BackendPath) }

// NewWithBackend is New with the iptables backend chosen (see backend.go).
func NewWithBackend(b Backend) (*Firewall, error) {
	v4 := newFamily(false, b)
	if v4.err != nil {
		return nil, v4.err
	}
	return &Firewall{families: []*family{v4, newFamily(true, b)}}, nil
}

// EnsureNetwork adds the rules of n that are missing (and drops stale rules
// tagged with n's id), creating the chains and jumps if needed. Running it
// again changes nothing.
func (fw *Firewall) EnsureNetwork(n Network) error {
	if err := n.Validate(); err != nil {
		return err
	}
	return fw.sync(Rules(n), func(line string) bool { return taggedWith(line, n.ID) })
}

// RemoveNetwork deletes every rule tagged with id, and the port rules of its
// endpoints; an unknown id is success. With the last network gone, the
// jumps and chains go too.
func (fw *Firewall) RemoveNetwork(id string) error {
	return fw.sync(nil, func(line string) bool { return taggedWith(line, id) || portsOfNetwork(line, id) })
}

// Reconcile makes vxbridge's chains hold exactly the rules of nets and of
// the published ports: missing rules are added, rules of other ids and
// untagged rules are deleted, the jumps are put back in place. With no nets
// and no ports, everything of ours is removed.
func (fw *Firewall) Reconcile(nets []Network, ports []Ports) error {
	seen := map[string]bool{}
	var rules []Rule
	for _, n := range nets {
		if err := n.Validate(); err != nil {
			return err
		}
		if seen[n.ID] {
			return fmt.Errorf("%w: network %s listed twice", ErrInvalidNetwork, n.ID)
		}
		seen[n.ID] = true
		rules = append(rules, Rules(n)...)
	}
	for _, p := range ports {
		if err := p.Validate(); err != nil {
			return err
		}
		rules = append(rules, PortRules(p)...)
	}
	return fw.sync(rules, func(string) bool { return true })
}

// EnsureJumps puts the jumps into our chains back where they belong (after
// DOCKER-USER, above DOCKER-FORWARD or 20.10's per-bridge rules), in each
// family that has our chains; in nftables mode there is nothing to move. Call it when docker may have inserted rules, e.g. after it created
// a network; Reconcile does it too.
func (fw *Firewall) EnsureJumps() error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for _, f := range fw.families {
		if f.err != nil {
			continue
		}
		if err := fw.syncFamily(f, syncRequest{jumpsOnly: true}); err != nil {
			return err
		}
	}
	return nil
}

// sync applies desired (rules of both families) to each family; owns says
// which existing lines the operation may delete.
func (fw *Firewall) sync(desired []Rule, owns func(line string) bool) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for _, f := range fw.families {
		var mine []Rule
		for _, r := range desired {
			if r.IPv6 == f.ipv6 {
				mine = append(mine, r)
			}
		}
		if f.err != nil {
			if len(mine) > 0 {
				return fmt.Errorf("network %s needs %s rules: %w", networkOf(mine[0]), f, f.err)
			}
			continue // nothing of ours can be there
		}
		if err := fw.syncFamily(f, syncRequest{desired: mine, owns: owns}); err != nil {
			return err
		}
	}
	return nil
}

func (fw *Firewall) syncFamily(f *family, req syncRequest) error {
	st, err := f.read()
	if err != nil {
		return err
	}
	script := plan(st, req)
	if script.empty() {
		return nil
	}
	if err := f.applyScript(script); err != nil {
		return fmt.Errorf("update vxbridge chains: %w", err)
	}
	// Whoever dropped them (RemovePorts, or Reconcile removing the rules a
	// crash left without a record), the flows they DNAT'ed must not keep
	// going to the old container once the host port is reused.
	if err := FlushConntrack(dnatMappings(script.droppedDNAT)); err != nil {
		return fmt.Errorf("rules removed, but %w", err)
	}
	return nil
}

func taggedWith(line, id string) bool {
	got, ok := lineNetwork(line)
	return ok && got == id
}

func networkOf(r Rule) string {
	id, _ := lineNetwork(r.Line())
	return id
}
