package firewall

// Design notes.
//
// Docker's iptables firewall (its default): docker 28+ sets the FORWARD
// policy to DROP when it runs its docker0 bridge and turned forwarding on
// itself (with --bridge=none the policy stays ACCEPT); 20.10 sets it
// whenever it enables forwarding. With br_netfilter loaded (docker loads it
// when it needs it), every frame crossing a bridge of the host's
// namespace, even between two ports of one bridge, passes iptables
// FORWARD. vxbridge owns four chains per family, a fifth while a port is
// published (see ports.go) and a sixth while a network answers names:
//
//	filter FORWARD -> VXBRIDGE-FORWARD      ACCEPTs only; first rule jumps to
//	                  VXBRIDGE-ISOLATION    DROPs only
//	mangle FORWARD -> VXBRIDGE-DOCKER       DROPs only (the docker guard)
//	nat POSTROUTING -> VXBRIDGE-POSTROUTING MASQUERADEs only
//	nat PREROUTING, OUTPUT -> VXBRIDGE-DNAT DNATs only
//	nat PREROUTING -> VXBRIDGE-DNS          REDIRECTs only, while a cross-host
//	                                        network's DNS goes to vxbridge
//	                                        (package names)
//
// and, with cross-host networks, filter INPUT -> VXBRIDGE-INPUT, the VXLAN
// port rule (guard.go), which no network's rules touch.
//
// One verdict per chain makes the order of network rules irrelevant, so a
// chain's desired content is a set and reconciling is a set difference done
// on the text `iptables -S` prints (Rule.Line is written in that form).
// Every network rule carries the comment "vxbridge:<identity>:<network id>"
// (package ownership/mark): rules are attributed to networks, and to the
// state file that made them, without any state of our own. One vxbridge runs
// per network namespace, but the chains may hold rules of another state file
// (lost, moved, another --state-dir's): an operation deletes only the rules
// it is told it owns.
//
// Docker's nftables firewall (--firewall-backend=nftables, docker 29+):
// docker keeps its rules in tables of its own (ip and ip6 docker-bridges)
// and makes no iptables chain at all. vxbridge then keeps the same rules in
// tables of its own (ip and ip6 vxbridge, BackendNFTables), rendered from
// the same model into native nf_tables expressions (nft_rules.go), planned
// by the same code and applied as one netlink batch (nft_plan.go); the
// VXLAN port rule's VTEPs are a set of those tables (nft_sets_linux.go).
// Where its base chains sit, and why an operator's drop still decides
// first, is at the top of nft_linux.go.
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
	"errors"
	"fmt"
	"sync"
)

// Firewall owns vxbridge's chains (iptables) or tables (nftables) in both
// families. It applies its rules to the network namespace of the calling
// thread.
type Firewall struct {
	mu       sync.Mutex // one operation at a time
	families []*family  // IPv4, IPv6
	owner    string     // identity of the state file in use; see SetOwner
	// guard is the VXLAN port rule wanted (guard.go): nil until
	// SetVXLANGuard says; guardSets says its sets were made (no rule may
	// name a set that is not there); guardPort is the port whose rule is
	// known to be in place (0: not known).
	guard     *VXLANGuard
	guardSets bool
	guardPort int
}

// SetOwner makes the rules written from now on carry identity, the state
// file's (store.DB.Identity), and limits what EnsureNetwork, RemoveNetwork,
// EnsurePorts and RemovePorts delete to rules carrying it. Call it before
// the first operation.
func (fw *Firewall) SetOwner(identity string) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.owner = identity
}

// mine says whether a listed line carries this firewall's identity.
func (fw *Firewall) mine(line string) bool {
	owner, _, ok := lineOwner(line)
	return ok && owner == fw.owner
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
	return fw.syncOwned(func() []Rule { n.Owner = fw.owner; return Rules(n) },
		func(line string) bool { return fw.mine(line) && taggedWith(line, n.ID) })
}

// RemoveNetwork deletes every rule of this owner tagged with id, and the
// port rules of its endpoints; an unknown id is success. With the last
// network gone, the jumps and chains go too.
func (fw *Firewall) RemoveNetwork(id string) error {
	return fw.syncOwned(nil, func(line string) bool { return fw.mine(line) && (taggedWith(line, id) || portsOfNetwork(line, id)) })
}

// Reconcile makes vxbridge's chains hold the rules of nets and of the
// published ports, written with this firewall's identity: missing rules
// are added, the jumps are put back in place, and of the rules not asked
// for, those owns says the caller owns (by the identity, network and
// endpoint their comment names) and those with no vxbridge comment are
// deleted. With no nets, no ports and no rule left of another owner,
// everything of ours is removed.
func (fw *Firewall) Reconcile(nets []Network, ports []Ports, owns func(OwnedRule) bool) error {
	seen := map[string]bool{}
	for _, n := range nets {
		if err := n.Validate(); err != nil {
			return err
		}
		if seen[n.ID] {
			return fmt.Errorf("%w: network %s listed twice", ErrInvalidNetwork, n.ID)
		}
		seen[n.ID] = true
	}
	for _, p := range ports {
		if err := p.Validate(); err != nil {
			return err
		}
	}
	desired := func() []Rule {
		var rules []Rule
		for _, n := range nets {
			n.Owner = fw.owner
			rules = append(rules, Rules(n)...)
		}
		for _, p := range ports {
			p.Owner = fw.owner
			rules = append(rules, PortRules(p)...)
		}
		return rules
	}
	fw.mu.Lock()
	setsErr := fw.repairVTEPSets()
	fw.mu.Unlock()
	return errors.Join(fw.syncOwned(desired, func(line string) bool {
		r, tagged := ownedRule(line)
		return !tagged || owns(r)
	}), setsErr)
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
		if err := fw.syncFamily(f, syncRequest{jumpsOnly: true, guard: fw.guardWant(f.ipv6)}); err != nil {
			return err
		}
	}
	return nil
}

// syncOwned is sync with the rules desired made under the firewall's lock,
// where they can read fw.owner; nil desires none.
func (fw *Firewall) syncOwned(desired func() []Rule, owns func(line string) bool) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	var rules []Rule
	if desired != nil {
		rules = desired()
	}
	return fw.syncLocked(rules, owns)
}

// syncLocked applies desired (rules of both families) to each family; owns
// says which existing lines the operation may delete. fw.mu held.
func (fw *Firewall) syncLocked(desired []Rule, owns func(line string) bool) error {
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
		if err := fw.syncFamily(f, syncRequest{desired: mine, owns: owns, guard: fw.guardWant(f.ipv6)}); err != nil {
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
