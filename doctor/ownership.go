package doctor

// The ownership check: does the state file in use own the kernel's
// vxbridge objects? Asked of the running plugin (what start-up decided,
// what its reconciler leaves in place), or, when no plugin answers (a start
// refused for this very reason), worked out here from the state file and
// the kernel as package ownership does at start-up.

import (
	"fmt"
	"slices"
	"strings"

	"github.com/vxbridge/vxbridge/firewall"
	"github.com/vxbridge/vxbridge/ownership"
	"github.com/vxbridge/vxbridge/store"
)

// StateFacts are the state file as read from disk, and the names of the
// network namespaces of vxbridge's, for when no plugin answers.
type StateFacts struct {
	Path string
	Info store.Info // zero with Err set
	Err  error
	// Missing: there is no state file; a start makes a new one.
	Missing bool
	// NetNS are the names in --netns-dir.
	NetNS []string
}

func checkOwnership(f *Facts) Finding {
	c := Finding{Check: "ownership"}
	if f.Report != nil && f.Report.Ownership != nil {
		o := f.Report.Ownership
		if len(o.Kept) == 0 {
			c.Level, c.Message = OK, fmt.Sprintf("state file %s (identity %s) owns every vxbridge object; at start-up: %s", f.Report.StateFile, o.Identity, o.Decision)
			return c
		}
		c.Level = Warn
		c.Message = fmt.Sprintf("%d vxbridge object(s) no record claims are left in place (%s); at start-up: %s",
			len(o.Kept), listed(o.Kept, 6), o.Message)
		c.Fix = ownership.WaysOut(f.Report.StateFile) + " (restart the plugin so)"
		return c
	}
	if f.State == nil || f.State.Err != nil {
		c.Level, c.Message = Skip, "no status from the plugin and no state file read"
		if f.State != nil {
			c.Message += ": " + f.State.Err.Error()
		}
		c.Fix = "run doctor as root, with --state-dir of the plugin's state directory"
		return c
	}
	origin := store.Origin{Identity: f.State.Info.Identity, Records: f.State.Info.Records, Commit: f.State.Info.Commit}
	if f.State.Missing {
		// A start makes the file, with an identity no object carries yet.
		origin = store.Origin{Identity: "to be made", Created: true}
	}
	in := ownership.Input{State: origin, Path: f.State.Path, Kernel: census(f)}
	d := ownership.Decide(in)
	switch {
	case d.Action == ownership.Refuse:
		c.Level, c.Message = Fail, "a start on this state file is refused: "+d.Message
		c.Fix = ownership.WaysOut(f.State.Path)
	case strings.Contains(d.Message, " of others ("):
		c.Level, c.Message = Warn, d.Message
		c.Fix = ownership.WaysOut(f.State.Path)
	default:
		c.Level, c.Message = OK, d.Message
	}
	return c
}

// census counts the vxbridge objects doctor sees (the host namespace's
// links, the filter table's rules, the namespaces' names) by identity.
func census(f *Facts) map[string]int {
	var aliases, tags []string
	for _, l := range f.Links {
		aliases = append(aliases, l.Alias)
	}
	for _, line := range strings.Split(f.IPTablesSave, "\n") {
		if r, ok := firewall.RuleOwner(line); ok {
			tags = append(tags, r.Tag)
		}
	}
	return ownership.Census(aliases, tags, f.State.NetNS)
}

// listed is at most n of items, sorted, and how many more.
func listed(items []string, n int) string {
	s := slices.Sorted(slices.Values(items))
	if len(s) <= n {
		return strings.Join(s, ", ")
	}
	return strings.Join(s[:n], ", ") + fmt.Sprintf(" and %d more", len(s)-n)
}
