package iptest

import "testing"

func TestWithoutEmptyTables(t *testing.T) {
	dump := "*filter\n:INPUT ACCEPT\n:FORWARD ACCEPT\nCOMMIT\n*nat\n:POSTROUTING ACCEPT\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n*mangle\n:FORWARD DROP\nCOMMIT"
	want := "*nat\n:POSTROUTING ACCEPT\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n*mangle\n:FORWARD DROP\nCOMMIT"
	if got := WithoutEmptyTables(dump); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
