package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sample() *Report {
	return &Report{
		Version: "v1", StateFile: "/var/lib/vxbridge/vxbridge.db",
		Firewall: Firewall{Backend: "nft", Reason: "docker's chains are in iptables-nft"},
		Networks: []Network{{ID: "0123456789abcdef0123", Bridge: "vxb-0123456789a", Subnets: []string{"10.1.0.0/24", "fd01::/64"},
			ICC: true, Endpoints: 2, Health: Healthy()}},
		Endpoints: []Endpoint{
			{ID: "aaaaaaaaaaaaaaaa", NetworkID: "0123456789abcdef0123", HostVeth: "vxhaaaa", MAC: "02:00:00:00:00:01", IPv4: "10.1.0.2/24", Joined: true, Health: Healthy()},
			{ID: "bbbbbbbbbbbbbbbb", NetworkID: "0123456789abcdef0123", HostVeth: "vxhbbbb", MAC: "02:00:00:00:00:02", IPv4: "10.1.0.3/24", Health: Unhealthy("veth vxhbbbb is missing")},
		},
	}
}

func TestWriteTableSingleHost(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, sample()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"firewall nft (docker's chains are in iptables-nft)",
		"NETWORKS (1)", "0123456789ab  vxb-0123456789a  10.1.0.0/24,fd01::/64  default",
		"ENDPOINTS (2)", "aaaaaaaaaaaa  0123456789ab  vxhaaaa", "PROBLEM: veth vxhbbbb is missing",
		"ETCD         " + NotApplicable, "VXLAN PEERS  " + NotApplicable,
		"1 PROBLEM(S):", "endpoint bbbbbbbbbbbb (veth vxhbbbb): veth vxhbbbb is missing",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "all healthy") {
		t.Errorf("table says all healthy with a problem:\n%s", out)
	}
}

func TestWriteTableCluster(t *testing.T) {
	r := sample()
	r.Endpoints = r.Endpoints[:1]
	r.Networks[0].VNI = 4097
	r.Cluster = &Cluster{Etcd: Etcd{Endpoints: []string{"http://10.0.0.1:2379"}, Connected: true}, VTEP: "10.0.0.2",
		Peers:      []Peer{{Host: "h2", VTEP: "10.0.0.3", Networks: []string{"0123456789ab"}, Health: Healthy()}},
		FDBEntries: 3, NeighborEntries: 4}
	var b bytes.Buffer
	if err := WriteTable(&b, r); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"4097", "http://10.0.0.1:2379  connected", "fdb entries 3", "neighbour entries 4",
		"VXLAN PEERS (1)", "h2    10.0.0.3", "all healthy"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	r.Cluster.Etcd = Etcd{Endpoints: []string{"x"}, Error: "context deadline exceeded"}
	if p := r.Problems(); len(p) != 1 || !strings.Contains(p[0], "deadline") {
		t.Errorf("Problems with etcd down = %q", p)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, sample()); err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(sample())
	again, _ := json.Marshal(got)
	if !bytes.Equal(want, again) {
		t.Errorf("round trip changed the report:\n%s\n%s", want, again)
	}
	if strings.Contains(b.String(), `"cluster"`) {
		t.Errorf("single-host JSON carries a cluster key:\n%s", b.String())
	}
	if _, err := Decode([]byte(`{"networks": 3}`)); err == nil {
		t.Error("Decode accepted networks: 3")
	}
}

// serve answers the status path on a unix socket at path.
func serve(t *testing.T, path string, rep *Report) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+Path, func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(rep) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

func TestFind(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, _, err := Find(ctx, dir); !errors.Is(err, ErrNoPlugin) {
		t.Fatalf("empty dir: %v, want ErrNoPlugin", err)
	}
	// A managed plugin's folder, plus a stale socket nobody listens on.
	id := filepath.Join(dir, "3c72f7d57ce4")
	os.Mkdir(id, 0o700)
	serve(t, filepath.Join(id, SocketName), sample())
	stale := filepath.Join(dir, "dead")
	os.Mkdir(stale, 0o700)
	l, _ := net.Listen("unix", filepath.Join(stale, SocketName))
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	sock, rep, err := Find(ctx, dir)
	if err != nil || sock != filepath.Join(id, SocketName) || rep.Version != "v1" {
		t.Fatalf("Find = %q, %+v, %v", sock, rep, err)
	}
	// An unmanaged one too: two answer, the caller must choose.
	serve(t, filepath.Join(dir, SocketName), sample())
	if _, _, err := Find(ctx, dir); err == nil || !strings.Contains(err.Error(), "--socket") {
		t.Fatalf("two plugins: %v, want an error asking for --socket", err)
	}
}

func TestFetchNotVxbridge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.Serve(l)
	defer srv.Close()
	if _, err := Fetch(context.Background(), path); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Fetch from a non-vxbridge socket: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	var b bytes.Buffer
	WriteJSON(&b, sample())
	f.Add(b.Bytes())
	f.Add([]byte(`{"cluster":{"peers":[{}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Decode(data)
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := WriteTable(&out, r); err != nil {
			t.Fatal(err)
		}
		r.Problems()
	})
}
