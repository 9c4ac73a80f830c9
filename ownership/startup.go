// Package ownership decides, at start-up, which of the kernel's vxbridge
// objects the state file in use may touch.
//
// vxbridge deletes a kernel object only if the state it runs with made it.
// Every state file has an identity (store.DB.Identity), and the objects made
// from it carry that identity (in link aliases and rule comments). Objects
// carrying another identity, or none (made before identities), belong to a
// state file that is not in use: lost, moved, replaced, or another
// --state-dir's. A reconcile never deletes those. What start-up must decide
// before its first reconcile is what to do when the state and the kernel
// disagree about who owns what; Decide does that, without side effects:
//
//	db := store.Open(dir)                 // ErrDamaged: exit, name `vxbridge state restore`
//	kernel := <count vxbridge links, rules and namespaces by identity>
//	d := ownership.Decide(ownership.Input{State: db.Origin(), Path: db.Path(), Kernel: kernel, Adopt: *adopt, Purge: *purge})
//	log d.Message (one line, whatever the action)
//	Refuse:        exit (ErrRefused), touching nothing
//	Adopt:         make records for the objects no record claims, give them this identity, then reconcile
//	Purge:         delete every vxbridge object no record claims, whatever its identity, then reconcile
//	KeepUnclaimed: reconcile, but delete none of this identity's objects that no record claims
//	Proceed:       reconcile as usual (this identity's unclaimed objects are leftovers)
//	after a reconcile without errors, if d.GoodCopy: db.SaveGoodCopy()
//	once a rollback is dealt with (adopted, purged, or nothing unclaimed found): db.AcceptRollback()
//
// A new or empty state file while the kernel holds other objects is the
// dangerous case (a changed --state-dir, a lost file, a reinstalled managed
// plugin pointing elsewhere): it is refused unless the operator says which
// way out. A state file that went back in time (store.Origin.Rollback) may
// have lost the records of live objects that carry its own identity, so
// those are kept until adopted or purged on purpose.
package ownership

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vxbridge/vxbridge/store"
)

// Flags that choose a way out, as serve spells them.
const (
	FlagAdopt = "--adopt"
	FlagPurge = "--purge-foreign"
)

// ErrRefused classifies a start-up refused by Decide.
var ErrRefused = errors.New("refusing to start")

// Action is what start-up does before its first reconcile.
type Action int

const (
	// Proceed: the objects carrying this state's identity are its own; the
	// reconciler deletes those no record claims. Others are left alone.
	Proceed Action = iota
	// KeepUnclaimed: as Proceed, but no object is deleted for lack of a
	// record: the file went back in time and its lost records may have
	// held them.
	KeepUnclaimed
	// Adopt: make records for the objects no record claims (any identity)
	// and mark them with this state's identity.
	Adopt
	// Purge: delete every vxbridge object no record claims, whatever
	// identity it carries.
	Purge
	// Refuse: exit without touching the kernel.
	Refuse
)

func (a Action) String() string {
	return [...]string{"proceed", "keep-unclaimed", "adopt", "purge", "refuse"}[a]
}

// Input is what start-up knows before it touches the kernel.
type Input struct {
	State store.Origin
	Path  string // the state file, for the message
	// Kernel counts the vxbridge objects found (links, rules, network
	// namespaces) by the identity they carry; "" is none (made before
	// identities).
	Kernel map[string]int
	// Adopt and Purge are the operator's flags (FlagAdopt, FlagPurge).
	Adopt, Purge bool
}

// Decision is Decide's answer.
type Decision struct {
	Action Action
	// Message is the one log line saying what was found and what happens
	// (for Refuse, the error; it names the commands that recover).
	Message string
	// GoodCopy: once the action and a reconcile have succeeded, the state
	// may be saved as the last good copy.
	GoodCopy bool
}

// Decide chooses what start-up does with the kernel's vxbridge objects.
func Decide(in Input) Decision {
	own, foreign := split(in)
	found := describe(in, own, foreign)
	switch {
	case in.Adopt && in.Purge:
		return Decision{Action: Refuse, Message: fmt.Sprintf("%s: %s and %s contradict each other; give one", found, FlagAdopt, FlagPurge)}
	case in.Adopt:
		return Decision{Action: Adopt, GoodCopy: true, Message: found + "; " + FlagAdopt + ": making records for the objects no record claims"}
	case in.Purge:
		return Decision{Action: Purge, GoodCopy: true, Message: found + "; " + FlagPurge + ": deleting every vxbridge object no record claims"}
	case foreign > 0 && in.State.Empty():
		return Decision{Action: Refuse, Message: found + "; nothing was touched. " + waysOut(in.Path)}
	case in.State.Rollback != "":
		return Decision{Action: KeepUnclaimed, Message: found + "; objects no record claims are kept, not deleted (" +
			FlagAdopt + " makes records for them, " + FlagPurge + " deletes them)"}
	case foreign > 0:
		return Decision{Action: Proceed, GoodCopy: true, Message: found + "; those of other state files are left alone"}
	}
	return Decision{Action: Proceed, GoodCopy: true, Message: found}
}

// split counts the objects that carry this state's identity, or carry none
// when the state file predates identities and so made them, and the others.
func split(in Input) (own, foreign int) {
	for id, n := range in.Kernel {
		if id == in.State.Identity || id == "" && in.State.Assigned && !in.State.Empty() {
			own += n
		} else {
			foreign += n
		}
	}
	return own, foreign
}

// describe is the first half of the log line: the state file and the
// kernel as found.
func describe(in Input, own, foreign int) string {
	var b strings.Builder
	switch o := in.State; {
	case o.Created:
		fmt.Fprintf(&b, "state file %s is new (identity %s)", in.Path, o.Identity)
	case o.Empty():
		fmt.Fprintf(&b, "state file %s (identity %s) holds no records", in.Path, o.Identity)
	default:
		fmt.Fprintf(&b, "state file %s (identity %s) holds %d records", in.Path, o.Identity, o.Records)
	}
	if r := in.State.Rollback; r != "" {
		fmt.Fprintf(&b, " but went back in time (%s)", r)
	}
	if r := in.State.Replaced; r != "" {
		fmt.Fprintf(&b, "; it replaced state file %s", r)
	}
	fmt.Fprintf(&b, "; the kernel holds %d vxbridge objects of this state", own)
	if foreign > 0 {
		fmt.Fprintf(&b, " and %d of others (%s)", foreign, others(in))
	}
	return b.String()
}

// others lists the foreign identities with their counts, in a stable order.
func others(in Input) string {
	var parts []string
	for _, id := range slices.Sorted(maps.Keys(in.Kernel)) {
		if id == in.State.Identity || id == "" && in.State.Assigned && !in.State.Empty() {
			continue
		}
		name := "state " + id
		if id == "" {
			name = "made before state identities"
		}
		parts = append(parts, fmt.Sprintf("%d %s", in.Kernel[id], name))
	}
	return strings.Join(parts, ", ")
}

// WaysOut is the advice of a refusal, the commands that recover: for
// `vxbridge doctor` too.
func WaysOut(path string) string { return waysOut(path) }

// waysOut is the advice of a refusal.
func waysOut(path string) string {
	return fmt.Sprintf("Put the state file that made them back (its last good copy: vxbridge state restore --state-dir %s), "+
		"or start once with %s to take the networks and endpoints over, or with %s to delete them", filepath.Dir(path), FlagAdopt, FlagPurge)
}
