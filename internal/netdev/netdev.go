// Package netdev is the netlink toolkit behind every link (network device)
// vxbridge makes: package bridge (bridges, veths) and package vxlan (VXLAN
// devices) look links up, judge their ownership and converge their
// attributes through it, so one rule holds for all of them.
//
// Ownership. vxbridge marks each link it makes with an alias (IFLA_IFALIAS,
// "vxbridge:<what>:<id>"). CheckOwned accepts an existing link only when its
// kind and alias are the ones asked for; any other link under a wanted name
// is refused with a *NotOwnedError (errors.Is ErrNotOwned) and never
// changed or deleted. The alias lives in the kernel, so ownership survives a
// plugin restart without a store look-up.
//
// Interface groups (IFLA_GROUP). The kernel ignores the alias in a create
// request, so a link is born in BuildGroup instead, which the kernel sets
// atomically with the creation: a link is never unmarked, whenever the
// process dies. It leaves the group (SetBuilt) once its alias and settings
// are in place. RetireGroup holds links waiting for a Reaper. No other
// software is expected to use these groups: vxbridge deletes every link in
// either.
//
// Convergent setters (Handle.SetAlias, SetMTU, SetMaster, SetUp, SetBuilt)
// each change one attribute, and only when the link lacks it, so the same
// steps serve a link just created and one found, and replaying them is
// harmless. Every netlink dump goes through RetryDump.
//
// This file is pure; the netlink requests are in the _linux.go files.
package netdev

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// The interface groups vxbridge marks its links with (`ip link show group N`).
const (
	// BuildGroup holds links being built. Every link vxbridge creates is
	// born in it and leaves it, for the default group 0, once its alias
	// and settings are in place; one still in it when no build runs was
	// left half-built by a crash.
	BuildGroup = 0x76786262 // "vxbb"
	// RetireGroup holds links waiting for a Reaper to delete them in one
	// batch.
	RetireGroup = 0x76786272 // "vxbr"
)

// ErrNotOwned classifies errors about a link that exists under a name
// vxbridge wants but is not vxbridge's (another kind, another alias or none):
// vxbridge never adopts, changes or deletes such a link. Match it with
// errors.Is; use errors.As with *NotOwnedError for the details.
var ErrNotOwned = errors.New("interface not managed by vxbridge")

// NotOwnedError says which link is in the way and what it is, so the user can
// tell a leftover from someone else's interface.
type NotOwnedError struct {
	Name  string
	Kind  string // link type as netlink reports it: "bridge", "veth", ...
	Alias string // the alias it carries, "" if none
}

func (e *NotOwnedError) Error() string {
	return fmt.Sprintf("interface %q exists and is not managed by vxbridge (kind %s, alias %q)", e.Name, e.Kind, e.Alias)
}

// Is makes errors.Is(err, ErrNotOwned) true.
func (e *NotOwnedError) Is(target error) bool { return target == ErrNotOwned }

// NotOwned describes l as a link in the way.
func NotOwned(l netlink.Link) *NotOwnedError {
	a := l.Attrs()
	return &NotOwnedError{Name: a.Name, Kind: l.Type(), Alias: a.Alias}
}

// CheckOwned accepts l only when it is of kind and carries alias, the marks
// vxbridge gives the links it makes; else a *NotOwnedError. A half-built
// link (in BuildGroup, its alias not set yet) is refused like a foreign one:
// a build a crash interrupted is not resumed by whoever finds the link, the
// purge of BuildGroup deletes it. An empty alias owns nothing: it would claim
// every link that has none.
func CheckOwned(l netlink.Link, kind, alias string) error {
	if alias != "" && l.Type() == kind && l.Attrs().Alias == alias {
		return nil
	}
	return NotOwned(l)
}

// CheckOwnedOrHalfBuilt is CheckOwned that also accepts a half-built link of
// kind (in BuildGroup, no alias). Only for a link whose build another call
// finishes: the gateway link of package bridge is made from a network's
// namespace and finished from the host's.
func CheckOwnedOrHalfBuilt(l netlink.Link, kind, alias string) error {
	a := l.Attrs()
	if l.Type() == kind && a.Alias == "" && a.Group == BuildGroup {
		return nil
	}
	return CheckOwned(l, kind, alias)
}

// Retired says whether l waits for a Reaper.
func Retired(l netlink.Link) bool { return l.Attrs().Group == RetireGroup }

// dumpAttempts bounds retries of a netlink dump the kernel interrupted
// because the table changed under it (NLM_F_DUMP_INTR); the netlink package
// then returns partial results with ErrDumpInterrupted.
const dumpAttempts = 5

// RetryDump runs dump until it completes uninterrupted, at most dumpAttempts
// times, and names what it was (what) in the error.
func RetryDump[T any](what string, dump func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range dumpAttempts {
		if v, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		var zero T
		return zero, fmt.Errorf("%s: %w", what, err)
	}
	return v, nil
}

// RunSteps applies setup steps in order and stops at the first failure.
func RunSteps(steps ...func() error) error {
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}
