package cluster

import (
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
