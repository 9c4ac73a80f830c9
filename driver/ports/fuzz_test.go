package ports

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/vxbridge/vxbridge/store"
)

func FuzzParseBindings(f *testing.F) {
	f.Add([]byte(`[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]`))
	f.Add([]byte(`[{"Proto":17,"Port":53,"HostIP":"::1","HostPort":0},{"Proto":132,"Port":1,"HostPort":9000,"HostPortEnd":9010}]`))
	f.Add([]byte(`[{"Proto":6,"Port":80,"HostIP":"192.0.2.1%x","HostPort":70000}]`))
	f.Add([]byte(`{"Proto":6}`))
	n := &store.Network{}
	ep := &store.Endpoint{IPv4: netip.MustParsePrefix("10.0.0.2/24"), IPv6: netip.MustParsePrefix("fd00::2/64")}
	f.Fuzz(func(t *testing.T, data []byte) {
		var raw interface{}
		if json.Unmarshal(data, &raw) != nil {
			return
		}
		binds, err := ParseBindings(map[string]interface{}{OptionKey: raw})
		if err != nil {
			return
		}
		// What parses expands into mappings the firewall and the relay take.
		wants, err := Expand(binds, n, ep, true)
		if err != nil {
			t.Fatalf("valid bindings %+v do not expand: %v", binds, err)
		}
		for _, w := range wants {
			if w.container.Port() == 0 || w.hi < w.lo || w.lo == 0 && w.hi != 0 || !w.hostIP.IsValid() || w.hostIP.Zone() != "" {
				t.Fatalf("unusable mapping %+v from %+v", w, binds)
			}
		}
	})
}
