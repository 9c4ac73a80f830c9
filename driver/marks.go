package driver

// Marks and ownership. Every link vxbridge makes carries an alias naming
// the record that claims it and the identity of the state file it was made
// from, every firewall rule a comment doing the same, every network
// namespace a name holding the identity (package ownership/mark). A
// reconcile deletes an object no record claims only when this state made it
// (owners.mine), never another state file's: a lost, moved or replaced
// file's objects stay until start-up is told to adopt or purge them
// (package ownership). Objects from before identities carry none; they are
// this state's when its file predates identities and holds records (it was
// given its identity at this start: Config.LegacyOwned).

import (
	"fmt"

	"github.com/vxbridge/vxbridge/bridge"
	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/ownership"
	"github.com/vxbridge/vxbridge/ownership/mark"
	"github.com/vxbridge/vxbridge/store"
)

// AliasPrefix starts the alias of every link vxbridge makes.
const AliasPrefix = mark.Prefix

// NetNSPrefix starts the name of every network namespace of vxbridge's.
const NetNSPrefix = mark.NetNSPrefix

func (d *Driver) netAlias(id string) string { return mark.Alias(d.owners.identity, mark.Net, id) }
func (d *Driver) endpointAlias(id string) string {
	return mark.Alias(d.owners.identity, mark.Endpoint, id)
}
func (d *Driver) vxlanAlias(id string) string { return mark.Alias(d.owners.identity, mark.VXLAN, id) }
func (d *Driver) gatewayAlias(id string) string {
	return mark.Alias(d.owners.identity, mark.Gateway, id)
}
func (d *Driver) netNSName(id string) string { return mark.NetNS(d.owners.identity, id) }

// claim is what a link's mark says claims it, whichever state file made it.
type claim struct{ kind, id string }

// claimOf reads the claim of a link's alias; ok is false for an alias
// vxbridge did not write.
func claimOf(alias string) (c claim, identity string, ok bool) {
	o, ok := mark.ParseAlias(alias)
	return claim{o.Kind, o.ID}, o.Identity, ok
}

// claimKey is an alias without the identity it carries: links and records
// are matched through it (status rows), whichever state made the link.
func claimKey(alias string) string {
	if o, ok := mark.ParseAlias(alias); ok {
		return mark.Alias("", o.Kind, o.ID)
	}
	return alias
}

// owners says whose objects this driver may change.
type owners struct {
	identity string // the state file's (store.DB.Identity); "": as before identities
	// legacy: objects carrying no identity are this state's.
	legacy bool
	// keep: none of this state's objects that no record claims is deleted:
	// the state file went back in time, and its lost records may have
	// claimed them (ownership.KeepUnclaimed). It holds while this process
	// runs; the next start decides again.
	keep bool
}

// mine says whether an object carrying identity was made from this state.
func (o owners) mine(identity string) bool {
	return identity == o.identity || identity == "" && (o.legacy || o.identity == "")
}

// pass is what one reconcile run may do beyond making the kernel match the
// records: start-up's decision, once.
type pass struct {
	// adopt: records were made for the objects of any identity no record
	// claimed; every object a record claims is given this identity.
	adopt bool
	// purge: every object no record claims is deleted, whatever its identity.
	purge bool
}

// takesOver says whether an object a record claims but that carries
// identity is to be given this state's identity.
func (d *Driver) takesOver(identity string, p pass) bool {
	return identity != d.owners.identity && (p.adopt || d.owners.mine(identity))
}

// mayDelete says whether an object no record claims, carrying identity,
// may be deleted.
func (d *Driver) mayDelete(identity string, p pass) bool {
	return p.purge || d.owners.mine(identity) && !d.owners.keep
}

// ownsRule is the firewall's ownership test for one pass (firewall
// Reconcile): the rules of a recorded network or endpoint that are not
// asked for are stale or carry an identity this state takes over; the
// others go only as mayDelete says.
func (d *Driver) ownsRule(claims map[claim]bool, p pass) func(firewall.OwnedRule) bool {
	return func(r firewall.OwnedRule) bool {
		claimed := claims[claim{mark.Net, r.Network}] && (r.Endpoint == "" || claims[claim{mark.Endpoint, r.Endpoint}])
		if claimed {
			return d.owners.mine(r.Owner) || d.takesOver(r.Owner, p)
		}
		return d.mayDelete(r.Owner, p)
	}
}

// bridgeTaken is CreateNetwork's refusal of a bridge name an interface
// holds that is not this network's: another state file's (say which) or
// not vxbridge's at all.
func (d *Driver) bridgeTaken(n *store.Network, l bridge.LinkInfo) error {
	if c, identity, ok := claimOf(l.Alias); ok && identity != d.owners.identity {
		return invalidf("bridge name %q is taken by %s %s of vxbridge network %s made from another state file (identity %q): "+
			"vxbridge doctor says how to take it over or remove it; or choose another name with -o %s=NAME",
			n.Bridge, l.Kind, l.Name, short(c.id), identity, OptBridgeName)
	}
	return invalidf("bridge name %q is taken by an existing %s interface that vxbridge does not own: choose another with -o %s=NAME",
		n.Bridge, l.Kind, OptBridgeName)
}

// claimsOf is what the records claim: each network its bridge (or gateway
// link), VXLAN device and inner gateway end, each endpoint of a recorded
// network its veth.
func claimsOf(nets map[string]*store.Network, eps []store.Endpoint) map[claim]bool {
	out := make(map[claim]bool, 3*len(nets)+len(eps))
	for id := range nets {
		out[claim{mark.Net, id}] = true
		out[claim{mark.VXLAN, id}] = true
		out[claim{mark.Gateway, id}] = true
	}
	for _, ep := range eps {
		if nets[ep.NetworkID] != nil {
			out[claim{mark.Endpoint, ep.ID}] = true
		}
	}
	return out
}

// takeOver gives the links of links that records claim this state's
// identity where they carry one it takes over (takesOver); netns names
// their namespace ("": the host's) for the report.
func (d *Driver) takeOver(links Links, netns string, claims map[claim]bool, p pass, rep *ReconcileReport) {
	for _, l := range markedLinks(links, netns, rep) {
		if !claims[l.claim] || !d.takesOver(l.identity, p) {
			continue
		}
		to := mark.Alias(d.owners.identity, l.kind, l.id)
		if err := links.SetAlias(l.Name, l.Alias, to); err != nil {
			rep.fail(netns, err)
			continue
		}
		rep.TakenOver = append(rep.TakenOver, qualified(netns, l.Name))
		d.log.Info("link taken over from another state file", "netns", netns, "link", l.Name, "from", l.Alias, "alias", to)
	}
}

// markedLink is a link carrying a vxbridge mark, read.
type markedLink struct {
	bridge.LinkInfo
	claim
	identity string
}

// markedLinks lists the links of links that carry a vxbridge mark; a
// failure to list is recorded in rep (netns: their namespace, "": the
// host's) and lists none.
func markedLinks(links Links, netns string, rep *ReconcileReport) []markedLink {
	owned, err := links.OwnedLinks(AliasPrefix)
	if err != nil {
		rep.fail(netns, err)
		return nil
	}
	out := make([]markedLink, 0, len(owned))
	for _, l := range owned {
		if c, identity, ok := claimOf(l.Alias); ok {
			out = append(out, markedLink{l, c, identity})
		}
	}
	return out
}

// qualified names a link of namespace netns ("": the host's) in reports.
func qualified(netns, name string) string {
	if netns == "" {
		return name
	}
	return netns + ":" + name
}

// Census counts the vxbridge objects in the kernel by the identity of the
// state file that made them (ownership.Census): links in the host's
// namespace and in every namespace of vxbridge's, the firewall's rules,
// the namespaces themselves. Start-up decides on it (ownership.Decide)
// before the first reconcile.
func (d *Driver) Census() (map[string]int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	owned, err := d.links.OwnedLinks(AliasPrefix)
	if err != nil {
		return nil, err
	}
	var aliases, tags, names []string
	for _, l := range owned {
		aliases = append(aliases, l.Alias)
	}
	if d.spaces != nil {
		if names, err = d.spaces.List(); err != nil {
			return nil, fmt.Errorf("list network namespaces: %w", err)
		}
	}
	for _, name := range names {
		ns, found, err := d.spaces.Open(name)
		if err != nil || !found {
			continue // gone since the listing, or unreadable: counted by its name
		}
		inNS, err := ns.Links().OwnedLinks(AliasPrefix)
		if err != nil {
			return nil, fmt.Errorf("namespace %s: %w", name, err)
		}
		for _, l := range inNS {
			aliases = append(aliases, l.Alias)
		}
	}
	rules, err := d.fw.OwnedRules()
	if err != nil {
		return nil, err
	}
	for _, r := range rules {
		tags = append(tags, r.Tag)
	}
	return ownership.Census(aliases, tags, names), nil
}
