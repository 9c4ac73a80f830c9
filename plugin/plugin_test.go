package plugin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
)

// fakeDriver answers every call; calls counts the ones that reached it.
type fakeDriver struct {
	network.Driver // nil: a call this fake does not define panics the test
	calls          atomic.Int32
	err            error
}

func (f *fakeDriver) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: "local", ConnectivityScope: "local"}, nil
}

func (f *fakeDriver) CreateNetwork(r *network.CreateNetworkRequest) error {
	f.calls.Add(1)
	return f.err
}

func (f *fakeDriver) Join(r *network.JoinRequest) (*network.JoinResponse, error) {
	f.calls.Add(1)
	return &network.JoinResponse{InterfaceName: network.InterfaceName{SrcName: "vxc1", DstPrefix: "eth"}, Gateway: "10.0.0.1"}, f.err
}

type fakeIPAM struct {
	ipam.Ipam
	err error
}

func (f *fakeIPAM) GetCapabilities() (*ipam.CapabilitiesResponse, error) {
	return &ipam.CapabilitiesResponse{}, nil
}

func (f *fakeIPAM) GetDefaultAddressSpaces() (*ipam.AddressSpacesResponse, error) {
	return &ipam.AddressSpacesResponse{LocalDefaultAddressSpace: "l", GlobalDefaultAddressSpace: "g"}, nil
}

func (f *fakeIPAM) RequestAddress(r *ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &ipam.RequestAddressResponse{Address: "10.0.0.5/24"}, nil
}

func post(t *testing.T, h http.Handler, path, body string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
	var out map[string]any
	raw, _ := io.ReadAll(rec.Body)
	if len(raw) > 0 && rec.Code != http.StatusNotFound {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s: reply is not JSON: %q", path, raw)
		}
	}
	return rec.Code, out
}

func TestActivateListsBothDrivers(t *testing.T) {
	h := New(&fakeDriver{}, &fakeIPAM{}, nil)
	code, out := post(t, h, "/Plugin.Activate", "")
	impl, _ := out["Implements"].([]any)
	if code != 200 || len(impl) != 2 || impl[0] != "NetworkDriver" || impl[1] != "IpamDriver" {
		t.Errorf("activate = %d %v", code, out)
	}
}

func TestEmptyBodyCalls(t *testing.T) {
	h := New(&fakeDriver{}, &fakeIPAM{}, nil)
	if code, out := post(t, h, "/NetworkDriver.GetCapabilities", ""); code != 200 || out["Scope"] != "local" {
		t.Errorf("capabilities = %d %v", code, out)
	}
	code, out := post(t, h, "/IpamDriver.GetCapabilities", "")
	if _, ok := out["RequiresRequestReplay"]; code != 200 || !ok {
		t.Errorf("ipam capabilities = %d %v", code, out)
	}
	if code, out := post(t, h, "/IpamDriver.GetDefaultAddressSpaces", ""); code != 200 || out["LocalDefaultAddressSpace"] != "l" {
		t.Errorf("address spaces = %d %v", code, out)
	}
}

func TestUnknownPathIs404(t *testing.T) {
	h := New(&fakeDriver{}, &fakeIPAM{}, nil)
	for _, p := range []string{"/NetworkDriver.Nope", "/VolumeDriver.Create", "/", "/Plugin.Activate/x"} {
		if code, _ := post(t, h, p, "{}"); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, code)
		}
	}
}

func TestBadRequestsAre4xxAndReachNothing(t *testing.T) {
	d := &fakeDriver{}
	h := New(d, &fakeIPAM{}, nil)
	cases := map[string]string{
		"malformed":  `{"NetworkID":`,
		"wrong type": `{"NetworkID":42}`,
		"not object": `[1,2,3]`,
		"empty":      ``,
		"huge":       `{"NetworkID":"` + strings.Repeat("a", MaxBodyBytes) + `"}`,
	}
	for name, body := range cases {
		code, out := post(t, h, "/NetworkDriver.CreateNetwork", body)
		msg, _ := out["Err"].(string)
		if code != http.StatusBadRequest || !strings.Contains(msg, "NetworkDriver.CreateNetwork") {
			t.Errorf("%s: %d %v, want 400 with an Err naming the call", name, code, out)
		}
	}
	if d.calls.Load() != 0 {
		t.Errorf("%d bad requests reached the driver", d.calls.Load())
	}
}

func TestErrorShapes(t *testing.T) {
	h := New(&fakeDriver{err: errors.New("option \"x\" is bad")}, &fakeIPAM{err: errors.New("pool exhausted")}, nil)
	code, out := post(t, h, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n"}`)
	if code != 200 || out["Err"] != `option "x" is bad` {
		t.Errorf("driver error = %d %v", code, out)
	}
	code, out = post(t, h, "/IpamDriver.RequestAddress", `{"PoolID":"p"}`)
	if code != 200 || out["Error"] != "pool exhausted" {
		t.Errorf("ipam error = %d %v", code, out)
	}
	code, out = post(t, h, "/NetworkDriver.Join", `{"NetworkID":"n","EndpointID":"e"}`)
	if code != 200 || out["Err"] == nil {
		t.Errorf("join error = %d %v", code, out)
	}
}

func TestSuccessReplies(t *testing.T) {
	h := New(&fakeDriver{}, &fakeIPAM{}, nil)
	code, out := post(t, h, "/NetworkDriver.Join", `{"NetworkID":"n","EndpointID":"e","SandboxKey":"/x"}`)
	iface, _ := out["InterfaceName"].(map[string]any)
	if code != 200 || iface["SrcName"] != "vxc1" || out["Gateway"] != "10.0.0.1" {
		t.Errorf("join = %d %v", code, out)
	}
	if code, out := post(t, h, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n","Unknown":1}`); code != 200 || len(out) != 0 {
		t.Errorf("create = %d %v, want 200 {}", code, out)
	}
	if code, out := post(t, h, "/IpamDriver.RequestAddress", `{"PoolID":"p"}`); code != 200 || out["Address"] != "10.0.0.5/24" {
		t.Errorf("request address = %d %v", code, out)
	}
}

func FuzzHandler(f *testing.F) {
	f.Add("/NetworkDriver.CreateNetwork", []byte(`{"NetworkID":"n","Options":{}}`))
	f.Add("/NetworkDriver.Join", []byte(`{"NetworkID":1}`))
	f.Add("/IpamDriver.RequestAddress", []byte(`{"PoolID":"p","Options":{"a":"b"}}`))
	f.Add("/Plugin.Activate", []byte(``))
	h := New(&fakeDriver{}, &fakeIPAM{}, nil)
	f.Fuzz(func(t *testing.T, path string, body []byte) {
		switch path {
		case "/NetworkDriver.CreateNetwork", "/NetworkDriver.Join", "/IpamDriver.RequestAddress",
			"/NetworkDriver.GetCapabilities", "/IpamDriver.GetDefaultAddressSpaces", "/Plugin.Activate":
		default:
			path = "/NetworkDriver.CreateNetwork"
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(string(body))))
		if rec.Code != 200 && rec.Code != 400 {
			t.Fatalf("%s: status %d", path, rec.Code)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s: reply is not JSON: %q", path, rec.Body.String())
		}
	})
}
