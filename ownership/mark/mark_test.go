package mark

import (
	"strings"
	"testing"
)

const (
	ident = "0123456789ab"
	netID = "1d6158dbf058e0fcd8a4e03c39d1e7a6e7fa8d7a6e2fb0b2a1d9c1e3f4a5b6c7"
	epID  = "466326e9f1230fcd8a4e03c39d1e7a6e7fa8d7a6e2fb0b2a1d9c1e3f4a5b6c7"
)

func TestAliasRoundTrip(t *testing.T) {
	for _, identity := range []string{ident, ""} {
		for _, kind := range []string{Net, Endpoint, VXLAN, Gateway} {
			a := Alias(identity, kind, netID)
			if len(a) > 255 {
				t.Errorf("alias %q is %d bytes, over the kernel's 255", a, len(a))
			}
			o, ok := ParseAlias(a)
			if !ok || o != (Owner{identity, kind, netID}) {
				t.Errorf("ParseAlias(%q) = %+v, %v", a, o, ok)
			}
		}
	}
	if a := Alias("", Net, "x"); a != "vxbridge:net:x" {
		t.Errorf("old form %q, want vxbridge:net:x", a)
	}
}

func TestParseAliasRefuses(t *testing.T) {
	for _, a := range []string{"", "vxbridge:", "vxbridge:net:", "vxbridge:foo:x", "other:net:x",
		"vxbridge:" + ident + ":bogus:x", "vxbridge:" + ident + ":", "vxbridge:" + ident} {
		if o, ok := ParseAlias(a); ok {
			t.Errorf("ParseAlias(%q) = %+v, want refused", a, o)
		}
	}
}

func TestCommentRoundTrip(t *testing.T) {
	for _, c := range []struct{ identity, id string }{
		{ident, netID}, {"", netID}, {ident, netID + ":" + epID}, {"", netID + ":" + epID}, {ident, "n1"}, {"", "n1:e1"},
	} {
		s := Comment(c.identity, c.id)
		if len(s) > 256 {
			t.Errorf("comment %q over iptables' 256 bytes", s)
		}
		gotIdent, gotID, ok := ParseComment(s)
		if !ok || gotIdent != c.identity || gotID != c.id {
			t.Errorf("ParseComment(%q) = %q, %q, %v", s, gotIdent, gotID, ok)
		}
	}
	if _, _, ok := ParseComment("other"); ok {
		t.Error("a foreign comment was read as vxbridge's")
	}
	// An identity alone is an id (an old rule of a network so named).
	if id, rest, _ := ParseComment("vxbridge:" + ident); id != "" || rest != ident {
		t.Errorf("ParseComment(vxbridge:<12 hex>) = %q, %q", id, rest)
	}
}

func TestNetNSRoundTrip(t *testing.T) {
	for _, identity := range []string{ident, ""} {
		name := NetNS(identity, netID)
		gotIdent, short, ok := ParseNetNS(name)
		if !ok || gotIdent != identity || !strings.HasPrefix(netID, short) || len(short) != 12 {
			t.Errorf("ParseNetNS(%q) = %q, %q, %v", name, gotIdent, short, ok)
		}
	}
	if n := NetNS("", netID); n != "vxbridge-1d6158dbf058" {
		t.Errorf("old form %q", n)
	}
	if _, _, ok := ParseNetNS("other"); ok {
		t.Error("a foreign name was read as vxbridge's")
	}
}

func FuzzParseAlias(f *testing.F) {
	f.Add(Alias(ident, Net, netID))
	f.Add("vxbridge:ep:x")
	f.Fuzz(func(t *testing.T, s string) {
		o, ok := ParseAlias(s)
		if ok && Alias(o.Identity, o.Kind, o.ID) != s {
			t.Errorf("ParseAlias(%q) = %+v, which spells %q", s, o, Alias(o.Identity, o.Kind, o.ID))
		}
	})
}
