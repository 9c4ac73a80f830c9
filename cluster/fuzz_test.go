package cluster

import "testing"

// FuzzViewApply feeds arbitrary etcd keys and values to the view: records
// written by other hosts (or anyone with etcd access) must never crash a
// host, and an endpoint is always filed under the host its key names.
func FuzzViewApply(f *testing.F) {
	k := newKeys("")
	f.Add(k.host("h1"), []byte(`{"vtep":"192.0.2.1","port":4789}`))
	f.Add(k.endpoint("h1", "e1"), []byte(`{"id":"e1","vni":42,"mac":"02:00:00:00:00:01","ipv4":"10.0.0.2","ipv6":"fd00::2"}`))
	f.Add(k.endpoint("h1", "e1"), []byte(`{"ipv4":"not an ip"}`))
	f.Add(k.prefix+"/endpoints/", []byte(`{}`))
	f.Add(k.prefix+"/blocks/x/y", []byte(`h1`))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		v := NewView()
		if err := v.apply(k, key, value); err != nil {
			return
		}
		for id, ep := range v.Endpoints {
			if want := id[:len(ep.Host)]; want != ep.Host || (len(id) > len(ep.Host) && id[len(ep.Host)] != '/') {
				t.Fatalf("endpoint %q filed under host %q", id, ep.Host)
			}
		}
		for _, h := range v.Hosts {
			_ = v.Remotes(h.ID, 1)
		}
		if err := v.apply(k, key, nil); err != nil {
			t.Fatalf("delete of %q: %v", key, err)
		}
		if len(v.Hosts)+len(v.Endpoints) != 0 {
			t.Fatalf("delete of %q left %+v", key, v)
		}
	})
}
