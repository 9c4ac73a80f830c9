package bench

import (
	"testing"
	"time"
)

func TestFirstAddAndParseFDB(t *testing.T) {
	log := "Timestamp: Sun Nov 22 21:20:23 2026 186002 usec\n" +
		"02:11:22:33:44:55 dev vxt master br0\n" +
		"Timestamp: Sun Nov 22 21:20:24 2026 000007 usec\n" +
		"Deleted 02:11:22:33:44:66 dev vxt dst 10.0.0.2 self permanent\n" +
		"Timestamp: Sun Nov 22 21:20:25 2026 500000 usec\n" +
		"02:11:22:33:44:55 dev vxt dst 10.0.0.2 self permanent\n"
	at, ok := firstAdd(log, "02:11:22:33:44:55")
	want := time.Date(2026, 11, 22, 21, 20, 25, 500000000, time.Local)
	if !ok || !at.Equal(want) {
		t.Errorf("firstAdd = %v %v, want %v (the learned entry has no dst)", at, ok, want)
	}
	if _, ok := firstAdd(log, "02:11:22:33:44:66"); ok {
		t.Error("a deletion counted as an addition")
	}
	fdb := parseFDB("02:11:22:33:44:55 dev vxt dst 10.0.0.2 self permanent\n33:33:00:00:00:01 dev vxt self permanent\n")
	if len(fdb) != 1 || fdb["02:11:22:33:44:55"] != "10.0.0.2" {
		t.Errorf("parseFDB = %v", fdb)
	}
}
