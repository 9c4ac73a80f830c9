package ownership

import (
	"strings"
	"testing"

	"github.com/vxbridge/vxbridge/store"
)

const (
	me    = "aaaaaaaaaaaa"
	other = "bbbbbbbbbbbb"
	path  = "/var/lib/vxbridge/vxbridge.db"
)

func TestDecide(t *testing.T) {
	created := store.Origin{Identity: me, Created: true}
	empty := store.Origin{Identity: me, Commit: 9}
	full := store.Origin{Identity: me, Records: 4, Commit: 40}
	rolled := store.Origin{Identity: me, Records: 3, Commit: 39, Rollback: "the file is at commit 39 but commit 40 had been written"}
	upgraded := store.Origin{Identity: me, Records: 4, Assigned: true}
	upgradedEmpty := store.Origin{Identity: me, Assigned: true}

	for _, c := range []struct {
		name   string
		in     Input
		want   Action
		good   bool
		saying []string // in the log line
	}{
		{"new file, empty kernel", Input{State: created}, Proceed, true, []string{"is new (identity " + me + ")", "holds 0 vxbridge objects of this state"}},
		{"new file, kernel holds another state's objects", Input{State: created, Kernel: map[string]int{other: 7}},
			Refuse, false, []string{"is new", "7 of others (7 state " + other + ")", "nothing was touched", "vxbridge state restore --state-dir /var/lib/vxbridge", FlagAdopt, FlagPurge}},
		{"new file, kernel holds objects from before identities", Input{State: created, Kernel: map[string]int{"": 2}},
			Refuse, false, []string{"2 made before state identities"}},
		{"empty file, kernel holds another state's objects", Input{State: empty, Kernel: map[string]int{other: 1, me: 1}},
			Refuse, false, []string{"holds no records", "1 vxbridge objects of this state and 1 of others"}},
		{"empty file, only its own objects", Input{State: empty, Kernel: map[string]int{me: 3}}, Proceed, true, nil},
		{"new file, adopt", Input{State: created, Kernel: map[string]int{other: 7}, Adopt: true}, Adopt, true, []string{FlagAdopt}},
		{"new file, purge", Input{State: created, Kernel: map[string]int{other: 7}, Purge: true}, Purge, true, []string{FlagPurge, "deleting"}},
		{"both flags", Input{State: created, Adopt: true, Purge: true}, Refuse, false, []string{"contradict"}},
		{"records, own objects", Input{State: full, Kernel: map[string]int{me: 12}}, Proceed, true, []string{"holds 4 records", "12 vxbridge objects of this state"}},
		{"records, other state's objects too", Input{State: full, Kernel: map[string]int{me: 12, other: 2}}, Proceed, true, []string{"left alone"}},
		{"rolled back", Input{State: rolled, Kernel: map[string]int{me: 12}}, KeepUnclaimed, false, []string{"went back in time (the file is at commit 39", "kept, not deleted"}},
		{"rolled back, adopt", Input{State: rolled, Kernel: map[string]int{me: 12}, Adopt: true}, Adopt, true, nil},
		{"rolled back and empty, others' objects", Input{State: store.Origin{Identity: me, Rollback: "x"}, Kernel: map[string]int{other: 1}}, Refuse, false, nil},
		{"upgraded file owns objects without identity", Input{State: upgraded, Kernel: map[string]int{"": 9}}, Proceed, true, []string{"9 vxbridge objects of this state"}},
		{"upgraded empty file does not", Input{State: upgradedEmpty, Kernel: map[string]int{"": 9}}, Refuse, false, []string{"9 made before state identities"}},
		{"replaced file", Input{State: store.Origin{Identity: me, Records: 1, Replaced: other}, Kernel: map[string]int{other: 3}}, Proceed, true, []string{"it replaced state file " + other}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.in.Path = path
			d := Decide(c.in)
			if d.Action != c.want || d.GoodCopy != c.good {
				t.Errorf("action %v, good copy %v; want %v, %v (%s)", d.Action, d.GoodCopy, c.want, c.good, d.Message)
			}
			for _, s := range c.saying {
				if !strings.Contains(d.Message, s) {
					t.Errorf("message %q lacks %q", d.Message, s)
				}
			}
			if strings.Contains(d.Message, "\n") || !strings.Contains(d.Message, path) {
				t.Errorf("message %q: want one line naming the file", d.Message)
			}
		})
	}
}

func TestCensus(t *testing.T) {
	got := Census(
		[]string{"vxbridge:" + me + ":net:n1", "vxbridge:ep:e1", "vxbridge:" + other + ":ep:e2", "eth0", ""},
		[]string{"vxbridge:" + me + ":n1", "vxbridge:" + me + ":n1", "vxbridge:" + me + ":n1:e1", "vxbridge:n2", "DOCKER"},
		[]string{"vxbridge-" + other + "-0123456789ab", "vxbridge-0123456789ab", "cni-1234"})
	want := map[string]int{me: 3, "": 3, other: 2}
	if len(got) != len(want) {
		t.Fatalf("census %v, want %v", got, want)
	}
	for id, n := range want {
		if got[id] != n {
			t.Errorf("census %v, want %v", got, want)
		}
	}
}
