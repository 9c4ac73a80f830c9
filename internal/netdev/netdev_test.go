package netdev

import (
	"errors"
	"fmt"
	"testing"

	"github.com/vishvananda/netlink"
)

const ours = "vxbridge:net:1"

// linkOf returns a link value of kind as the netlink package decodes it.
func linkOf(kind, name, alias string, group uint32) netlink.Link {
	la := netlink.LinkAttrs{Name: name, Alias: alias, Group: group}
	switch kind {
	case "bridge":
		return &netlink.Bridge{LinkAttrs: la}
	case "veth":
		return &netlink.Veth{LinkAttrs: la}
	case "vxlan":
		return &netlink.Vxlan{LinkAttrs: la}
	}
	panic("unknown kind " + kind)
}

// The one rule, for every kind vxbridge makes: its kind and its alias, or
// nothing. A half-built link (BuildGroup, no alias yet) is refused like a
// foreign one.
func TestCheckOwned(t *testing.T) {
	cases := []struct {
		what  string
		alias string // the link's
		group uint32
		owned bool
	}{
		{what: "ours", alias: ours, owned: true},
		{what: "ours, settings not finished", alias: ours, group: BuildGroup, owned: true},
		{what: "foreign alias", alias: "someone:else"},
		{what: "no alias", alias: ""},
		{what: "half-built", alias: "", group: BuildGroup},
	}
	for _, kind := range []string{"bridge", "veth", "vxlan"} {
		for _, tc := range cases {
			l := linkOf(kind, "l0", tc.alias, tc.group)
			err := CheckOwned(l, kind, ours)
			if tc.owned != (err == nil) {
				t.Errorf("%s %s: CheckOwned = %v, want owned %t", kind, tc.what, err, tc.owned)
			}
			if tc.owned {
				continue
			}
			var no *NotOwnedError
			if !errors.As(err, &no) || *no != (NotOwnedError{Name: "l0", Kind: kind, Alias: tc.alias}) {
				t.Errorf("%s %s: error %#v, want a *NotOwnedError naming it", kind, tc.what, err)
			}
		}
		// Our alias on another kind is not ours either.
		if err := CheckOwned(linkOf(kind, "l0", ours, 0), "other", ours); !errors.Is(err, ErrNotOwned) {
			t.Errorf("a %s with our alias passed as another kind: %v", kind, err)
		}
		// An empty alias claims nothing, not even links without one.
		if err := CheckOwned(linkOf(kind, "l0", "", 0), kind, ""); !errors.Is(err, ErrNotOwned) {
			t.Errorf("%s without alias claimed by an empty alias: %v", kind, err)
		}
	}
}

func TestCheckOwnedOrHalfBuilt(t *testing.T) {
	for _, tc := range []struct {
		what  string
		l     netlink.Link
		owned bool
	}{
		{"half-built veth", linkOf("veth", "g0", "", BuildGroup), true},
		{"our veth", linkOf("veth", "g0", ours, 0), true},
		{"half-built bridge", linkOf("bridge", "g0", "", BuildGroup), false},
		{"veth without alias, built", linkOf("veth", "g0", "", 0), false},
		{"foreign veth in the build group", linkOf("veth", "g0", "someone:else", BuildGroup), false},
	} {
		err := CheckOwnedOrHalfBuilt(tc.l, "veth", ours)
		if tc.owned != (err == nil) || (err != nil && !errors.Is(err, ErrNotOwned)) {
			t.Errorf("%s: %v, want owned %t", tc.what, err, tc.owned)
		}
	}
}

func TestNotOwnedError(t *testing.T) {
	err := fmt.Errorf("create: %w", CheckOwned(linkOf("bridge", "br0", "", 0), "bridge", ours))
	if !errors.Is(err, ErrNotOwned) {
		t.Fatalf("errors.Is(%v, ErrNotOwned) = false", err)
	}
	var no *NotOwnedError
	if !errors.As(err, &no) || no.Kind != "bridge" || no.Alias != "" {
		t.Fatalf("errors.As gave %+v", no)
	}
	want := `interface "br0" exists and is not managed by vxbridge (kind bridge, alias "")`
	if no.Error() != want {
		t.Errorf("message %q, want %q", no, want)
	}
}

func TestRetryDump(t *testing.T) {
	dump := func(interrupted int, err error) (func() (int, error), *int) {
		calls := 0
		return func() (int, error) {
			calls++
			if calls <= interrupted {
				return -1, netlink.ErrDumpInterrupted
			}
			return calls, err
		}, &calls
	}
	f, calls := dump(dumpAttempts-1, nil)
	if v, err := RetryDump("list", f); err != nil || v != dumpAttempts {
		t.Errorf("interrupted %d times: %d, %v; want the last, complete result", dumpAttempts-1, v, err)
	}
	f, calls = dump(dumpAttempts, nil)
	v, err := RetryDump("list links", f)
	if !errors.Is(err, netlink.ErrDumpInterrupted) || v != 0 || *calls != dumpAttempts {
		t.Errorf("always interrupted: %d, %v after %d calls; want the zero value and the error after %d",
			v, err, *calls, dumpAttempts)
	}
	if err != nil && err.Error() != "list links: "+netlink.ErrDumpInterrupted.Error() {
		t.Errorf("error %q does not say what was dumped", err)
	}
	other := errors.New("permission denied")
	f, calls = dump(0, other)
	if _, err := RetryDump("list", f); !errors.Is(err, other) || *calls != 1 {
		t.Errorf("another error: %v after %d calls, want it at once", err, *calls)
	}
}
