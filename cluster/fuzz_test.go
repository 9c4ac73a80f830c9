package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// FuzzDecodeNetRecord feeds arbitrary etcd keys and values to the decoder
// of a network's records: records written by other hosts (or anyone with
// etcd access) must never crash a host, and a record always belongs to the
// host and network its key names, whatever its value claims.
func FuzzDecodeNetRecord(f *testing.F) {
	k := newKeys("")
	f.Add(k.netMember(42, "h1"), []byte(`{"vtep":"192.0.2.1","port":4789}`))
	f.Add(k.netEndpoint(42, "h1", "e1"), []byte(`{"id":"e1","vni":42,"mac":"02:00:00:00:00:01","ipv4":"10.0.0.2","ipv6":"fd00::2"}`))
	f.Add(k.netEndpoint(42, "h1", "e1"), []byte(`{"ipv4":"not an ip"}`))
	f.Add(k.netRoot(42)+"eps/", []byte(`{}`))
	f.Add(k.prefix+"/blocks/x/y", []byte(`h1`))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		c, err := k.decodeNetRecord(42, key, value, 1)
		if err != nil {
			return
		}
		rest := strings.TrimPrefix(key, k.netRoot(42))
		switch c.Kind {
		case MemberSet:
			if rest != "members/"+c.Host || c.Member.Host != c.Host {
				t.Fatalf("member of %q filed as %+v", key, c)
			}
		case EndpointSet:
			if rest != "eps/"+c.Host+"/"+c.ID || c.Endpoint.Host != c.Host || c.Endpoint.ID != c.ID || c.Endpoint.VNI != 42 {
				t.Fatalf("endpoint of %q filed as %+v", key, c)
			}
		default:
			t.Fatalf("a value decoded as a deletion: %+v", c)
		}
		if d, err := k.decodeNetRecord(42, key, nil, 0); err != nil || d.Key() != c.Key() {
			t.Fatalf("delete of %q: %+v %v", key, d, err)
		}
	})
}

// FuzzVerifyRecord feeds forged network records and host copies to the
// verifier: what is believed is always what the host's own copy says (or
// nothing when there is none, or it is not of this network), never the
// network record's value; and a record is called forged exactly when it
// differs from a copy that decodes.
func FuzzVerifyRecord(f *testing.F) {
	k := newKeys("")
	f.Add(true, []byte(`{"vtep":"192.0.2.1","port":4789}`), []byte(`{"host":"h1","vtep":"192.0.2.1","port":4789}`), true)
	f.Add(false, []byte(`{"mac":"02:00:00:00:00:01","ipv4":"10.0.0.66"}`), []byte(`{"id":"e1","host":"h1","vni":42,"mac":"02:00:00:00:00:01","ipv4":"10.0.0.2"}`), true)
	f.Add(false, []byte(`{"id":"e1","host":"h1","vni":7}`), []byte(`{"id":"e1","host":"h1","vni":7}`), true)
	f.Add(true, []byte(nil), []byte(`{}`), false)
	f.Fuzz(func(t *testing.T, member bool, netValue, copyValue []byte, hasCopy bool) {
		v := newVerifier(&Client{k: k, host: "self", log: slog.New(slog.DiscardHandler)}, 42)
		key := k.netEndpoint(42, "h1", "e1")
		if member {
			key = k.netMember(42, "h1")
		}
		ch, ok := v.decode(key, netValue, 5)
		if !ok {
			t.Fatalf("a valid key was skipped: %q", netValue)
		}
		p := &pending{key: key, ch: ch, value: netValue, readAt: 9}
		if hasCopy {
			p.own = ownRecord{value: copyValue, createRev: 3}
		}
		got := v.settle(p)
		want, err := k.decodeNetRecord(42, key, copyValue, 3)
		if !hasCopy || err != nil {
			want, _ = k.decodeNetRecord(42, key, nil, 0)
		}
		if got.Kind != want.Kind || got.Member != want.Member || got.Endpoint != want.Endpoint {
			t.Fatalf("believed %+v, want the copy's %+v", got, want)
		}
		copyOK := hasCopy && err == nil
		if forged := got.Forged != ""; copyOK && forged == bytes.Equal(netValue, copyValue) || !copyOK && forged != (netValue != nil) {
			t.Fatalf("forged %q for network value %q, copy %q (%t)", got.Forged, netValue, copyValue, hasCopy)
		}
	})
}
