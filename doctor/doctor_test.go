package doctor

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/vxbridge/vxbridge/status"
	"github.com/vxbridge/vxbridge/store"
)

const (
	netID = "0123456789abcdef0123456789abcdef"
	ident = "aaaaaaaaaaaa" // the running plugin's state file
	other = "bbbbbbbbbbbb"
)

// saveOK is docker's and vxbridge's filter table for one network.
const saveOK = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
:VXBRIDGE-FORWARD - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j VXBRIDGE-FORWARD
-A VXBRIDGE-FORWARD -i vxb-0123456789a -m comment --comment "vxbridge:` + ident + `:` + netID + `" -j ACCEPT
COMMIT
`

// mangleOK is vxbridge's mangle table for one network: the docker guard.
const mangleOK = `*mangle
:FORWARD ACCEPT [0:0]
:VXBRIDGE-DOCKER - [0:0]
-A FORWARD -j VXBRIDGE-DOCKER
-A VXBRIDGE-DOCKER -i docker0 -o vxb-0123456789a -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment "vxbridge:` + ident + `:` + netID + `" -j DROP
COMMIT
`

func healthyFacts() *Facts {
	return &Facts{
		Socket: "/run/docker/plugins/x/vxbridge.sock",
		Report: &status.Report{Version: "v1", Firewall: status.Firewall{Backend: "nft"},
			Networks:  []status.Network{{ID: netID, Bridge: "vxb-0123456789a", Health: status.Healthy()}},
			Endpoints: []status.Endpoint{{ID: "ep1", NetworkID: netID, HostVeth: "vxhep1", Health: status.Healthy()}},
			StateFile: "/var/lib/vxbridge/vxbridge.db", Ownership: &status.Ownership{Identity: ident, Decision: "proceed"}},
		IPTablesSave: saveOK, IPTablesMangle: mangleOK, IPForward: "1", BridgeNFCall: "1",
		UnderlayIface: "eth0", UnderlayMTU: 1500,
		Links: []Link{{Name: "vxb-0123456789a", Alias: "vxbridge:" + ident + ":net:" + netID, Kind: "bridge"},
			{Name: "vxhep1", Alias: "vxbridge:" + ident + ":ep:ep1", Kind: "veth"}, {Name: "eth0", Kind: "device"},
			{Name: "vxlan-1", Alias: "vxbridge:" + ident + ":vxlan:42", Kind: "vxlan"}},
		Neighbours: 10, GCThresh2: 512, GCThresh3: 1024,
	}
}

// nftablesFacts makes f a host where docker runs its nftables backend and
// vxbridge keeps its rules in its own table.
func nftablesFacts(f *Facts) {
	f.Report.Firewall.Backend = "nftables"
	f.NFTablesSave = strings.NewReplacer(":FORWARD DROP", ":FORWARD ACCEPT", "-A FORWARD -j DOCKER-USER\n", "", ":DOCKER-USER - [0:0]\n", "").Replace(saveOK)
	f.IPTablesSave = "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"
}

func TestHealthyNFTablesHost(t *testing.T) {
	f := healthyFacts()
	nftablesFacts(f)
	if c := checkForward(f); c.Level != OK || !strings.Contains(c.Message, "nftables mode") {
		t.Errorf("%+v", c)
	}
}

func byCheck(fs []Finding) map[string]Finding {
	m := map[string]Finding{}
	for _, f := range fs {
		m[f.Check] = f
	}
	return m
}

func TestHealthyHost(t *testing.T) {
	fs := Run(healthyFacts())
	for _, f := range fs {
		want := OK
		if f.Check == "etcd" || f.Check == "peers" {
			want = Skip
		}
		if f.Level != want {
			t.Errorf("%s: %s %q, want %s", f.Check, f.Level, f.Message, want)
		}
	}
	if Failed(fs) {
		t.Error("Failed on a healthy host")
	}
	if f := byCheck(fs)["etcd"]; f.Message != status.NotApplicable {
		t.Errorf("etcd on single-host: %q", f.Message)
	}
}

// TestBrokenHost: each broken fact of a healthy host gives its check the
// level, message and fix an operator acts on (the plugin, ownership,
// leftovers, state); the firewall and the cross-host checks follow.
func TestBrokenHost(t *testing.T) {
	runBroken(t, []brokenCase{
		{"no plugin", func(f *Facts) { f.Report, f.ReportErr = nil, errors.New("dial unix: connection refused") }, "plugin", Fail, "connection refused", "docker plugin enable"},
		{"leftover", func(f *Facts) {
			f.Links = append(f.Links, Link{Name: "vxb-old", Alias: "vxbridge:" + ident + ":net:dead", Kind: "bridge"},
				Link{Name: "vxb-other", Alias: "vxbridge:" + other + ":net:x", Kind: "bridge"})
		}, "leftovers", Warn, "vxb-old (bridge, vxbridge:" + ident + ":net:dead)", "ip link delete"},
		{"another state's objects kept", func(f *Facts) {
			f.Report.Ownership.Kept = []string{"vxb-other", "rules:vxbridge:" + other + ":x"}
			f.Report.Ownership.Message = "state file /var/lib/vxbridge/vxbridge.db ... and 2 of others (2 state " + other + ")"
		}, "ownership", Warn, "2 vxbridge object(s) no record claims are left in place (rules:vxbridge:" + other + ":x, vxb-other); at start-up: state file",
			"vxbridge state restore --state-dir /var/lib/vxbridge"},
		{"no plugin, state file holds none of the kernel's objects", func(f *Facts) {
			f.Report, f.ReportErr = nil, errors.New("connection refused")
			f.State = &StateFacts{Path: "/srv/vx/vxbridge.db", Info: store.Info{Identity: other}}
		}, "ownership", Fail, "a start on this state file is refused: state file /srv/vx/vxbridge.db (identity " + other + ") holds no records; " +
			"the kernel holds 0 vxbridge objects of this state and 4 of others (4 state " + ident + ")", ""},
		{"no plugin, no state file", func(f *Facts) {
			f.Report, f.ReportErr = nil, errors.New("connection refused")
			f.State = &StateFacts{Path: "/srv/vx/vxbridge.db", Missing: true, NetNS: []string{"vxbridge-" + ident + "-0123456789ab"}}
		}, "ownership", Fail, "is new (identity to be made); the kernel holds 0 vxbridge objects of this state and 5 of others", ""},
		{"no plugin, its state file", func(f *Facts) {
			f.Report, f.ReportErr = nil, errors.New("connection refused")
			f.State = &StateFacts{Path: "/srv/vx/vxbridge.db", Info: store.Info{Identity: ident, Records: 2}}
		}, "ownership", OK, "holds 2 records; the kernel holds 4 vxbridge objects of this state", ""},
		{"unhealthy veth", func(f *Facts) { f.Report.Endpoints[0].Health = status.Unhealthy("veth vxhep1 is missing") }, "state", Warn, "vxhep1 is missing", "reconcile"},
	})
}

func TestBrokenFirewall(t *testing.T) {
	runBroken(t, []brokenCase{
		{"jump gone", func(f *Facts) {
			f.IPTablesSave = strings.Replace(f.IPTablesSave, "-A FORWARD -j VXBRIDGE-FORWARD\n", "", 1)
		}, "forward", Fail, "no jump to VXBRIDGE-FORWARD", "backend (nft)"},
		{"rule gone", func(f *Facts) {
			f.IPTablesSave = strings.Replace(f.IPTablesSave, `-A VXBRIDGE-FORWARD -i`, `-A OTHER -i`, 1)
		}, "forward", Fail, "no VXBRIDGE-FORWARD rules for network(s) 0123456789ab", "restart the plugin"},
		{"iptables unreadable", func(f *Facts) { f.IPTablesErr = errors.New("permission denied") }, "forward", Skip, "permission denied", "root"},
		// Docker 28+ after a restart, before the plugin moved its jump back.
		{"DOCKER-FORWARD above", func(f *Facts) {
			f.IPTablesSave = strings.Replace(f.IPTablesSave, "-A FORWARD -j VXBRIDGE-FORWARD\n",
				"-A FORWARD -j DOCKER-FORWARD\n-A FORWARD -j VXBRIDGE-FORWARD\n", 1)
		}, "forward", Warn, "DOCKER-FORWARD", "moves its jump back"},
		{"DOCKER-FORWARD above, guard gone", func(f *Facts) {
			f.IPTablesSave = strings.Replace(f.IPTablesSave, "-A FORWARD -j VXBRIDGE-FORWARD\n",
				"-A FORWARD -j DOCKER-FORWARD\n-A FORWARD -j VXBRIDGE-FORWARD\n", 1)
			f.IPTablesMangle = "*mangle\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"
		}, "forward", Fail, "can open connections into vxbridge networks", "reconciler restores"},
		{"docker guard gone", func(f *Facts) {
			f.IPTablesMangle = strings.Replace(f.IPTablesMangle, "-A FORWARD -j VXBRIDGE-DOCKER\n", "", 1)
		}, "forward", Fail, "no jump to VXBRIDGE-DOCKER in mangle FORWARD", "reconciler restores"},
		// Docker's nftables mode: the rules are in vxbridge's table.
		{"nftables, table gone", func(f *Facts) { nftablesFacts(f); f.NFTablesSave = "" }, "forward", Fail, "no jump to VXBRIDGE-FORWARD", "nf_tables change"},
		{"nftables, rule gone", func(f *Facts) {
			nftablesFacts(f)
			f.NFTablesSave = strings.Replace(f.NFTablesSave, `-A VXBRIDGE-FORWARD -i`, `-A OTHER -i`, 1)
		}, "forward", Fail, "no VXBRIDGE-FORWARD rules in table ip vxbridge for network(s) 0123456789ab", "restart"},
		{"nftables, iptables DROP", func(f *Facts) { nftablesFacts(f); f.IPTablesSave = saveOK }, "forward", Fail, "FORWARD policy is DROP", "iptables -P FORWARD ACCEPT"},
		{"nftables unreadable", func(f *Facts) { nftablesFacts(f); f.NFTablesErr = errors.New("EPERM") }, "forward", Skip, "EPERM", "root"},
		{"no forwarding", func(f *Facts) { f.IPForward = "0" }, "ip_forward", Fail, "=0", "sysctl -w net.ipv4.ip_forward=1"},
	})
}

func TestBrokenCrossHost(t *testing.T) {
	runBroken(t, []brokenCase{
		{"mtu too big", func(f *Facts) { f.Report.Networks[0].MTU = 9000 }, "mtu", Warn, "MTU 9000 > 1500 (eth0 1500)", "mtu=1500"},
		{"vxlan mtu", func(f *Facts) { f.Report.Networks[0].VNI = 42 }, "mtu", Warn, "MTU 1500 > 1450", "mtu=1450"},
		{"etcd down", func(f *Facts) {
			f.Report.Cluster = &status.Cluster{Etcd: status.Etcd{Endpoints: []string{"http://e:2379"}, Error: "deadline exceeded"}}
		}, "etcd", Fail, "deadline exceeded", "etcdctl"},
		{"old hosts", func(f *Facts) {
			f.Report.Cluster = &status.Cluster{Etcd: status.Etcd{Connected: true}, OldHosts: []string{"h7"}}
		}, "peers", Fail, "h7", "upgrade vxbridge"},
		{"refused claim", func(f *Facts) {
			f.Report.Cluster = &status.Cluster{Etcd: status.Etcd{Connected: true}, Conflicts: []status.Conflict{
				{Network: "42", Endpoint: "h2/x", What: "address", Value: "10.90.0.5", HeldBy: "h1/e1"}}}
		}, "peers", Warn, "h2/x claims address 10.90.0.5 held by h1/e1", "cloned host id"},
		{"lost block", func(f *Facts) {
			f.Report.Cluster = &status.Cluster{Etcd: status.Etcd{Connected: true}, LostBlocks: []status.LostBlock{
				{Pool: "10.90.0.0/24", Block: "10.90.0.0/26", HeldBy: "h2", Addresses: []string{"10.90.0.2", "10.90.0.3"}}}}
		}, "peers", Warn, "10.90.0.0/26 of pool 10.90.0.0/24, held by h2; these addresses of this host's containers may be handed out twice: 10.90.0.2,10.90.0.3", "restart the containers"},
		{"neighbours soft", func(f *Facts) { f.Neighbours = 600 }, "neighbours", Warn, "soft limit", "gc_thresh3=2048"},
		{"neighbours hard", func(f *Facts) { f.Neighbours = 1000 }, "neighbours", Fail, "hard limit", "gc_thresh3"},
		{"permanent peer entries not counted", func(f *Facts) {
			f.Neighbours = 7600
			f.Report.Cluster = &status.Cluster{Etcd: status.Etcd{Connected: true}, NeighborEntries: 7500, RemoteEndpoints: 7500, Programming: status.ProgrammingEager}
		}, "neighbours", OK, "100 IPv4 neighbour entries counted against the limits (7600 in the table, 7500 of them", ""},
		{"on demand counts", func(f *Facts) {
			f.Neighbours = 1000
			f.Report.Cluster = &status.Cluster{Etcd: status.Etcd{Connected: true}, NeighborEntries: 900, RemoteEndpoints: 7500, Programming: status.ProgrammingOnDemand}
		}, "neighbours", Fail, "hard limit", "gc_thresh3=2048"},
		{"on demand, many peers", func(f *Facts) {
			f.Report.Cluster = &status.Cluster{Etcd: status.Etcd{Connected: true}, RemoteEndpoints: 7500, Programming: status.ProgrammingOnDemand}
		}, "neighbours", Warn, "7500 remote endpoints", "gc_thresh3=30000 net.ipv4.neigh.default.gc_thresh2=15000"},
		{"table was full", func(f *Facts) { f.TableFulls = 3 }, "neighbours", Warn, "refused a new entry 3 times", "gc_thresh3"},
	})
}

// brokenCase breaks one fact of healthyFacts and says what check must
// find: its level, a part of its message and of its fix.
type brokenCase struct {
	name    string
	breakIt func(*Facts)
	check   string
	level   Level
	msg     string // in Message
	fix     string // in Fix
}

func runBroken(t *testing.T, cases []brokenCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			facts := healthyFacts()
			tc.breakIt(facts)
			f := byCheck(Run(facts))[tc.check]
			if f.Level != tc.level || !strings.Contains(f.Message, tc.msg) || !strings.Contains(f.Fix, tc.fix) {
				t.Errorf("%s = %s %q (fix %q), want %s containing %q (fix with %q)", tc.check, f.Level, f.Message, f.Fix, tc.level, tc.msg, tc.fix)
			}
		})
	}
}

func TestParseForward(t *testing.T) {
	policy, jump, tagged := parseForward(saveOK)
	if policy != "DROP" || !jump || !tagged[netID] || len(tagged) != 1 {
		t.Errorf("parseForward = %q %v %v", policy, jump, tagged)
	}
	policy, jump, tagged = parseForward("garbage\n-A VXBRIDGE-FORWARD \"vxbridge:unterminated\n:FORWARD\n")
	if policy != "" || jump || len(tagged) != 0 {
		t.Errorf("parseForward(garbage) = %q %v %v", policy, jump, tagged)
	}
}

func TestWrite(t *testing.T) {
	facts := healthyFacts()
	facts.IPForward = "0"
	var b bytes.Buffer
	if err := Write(&b, Run(facts)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "[FAIL]  ip_forward") || !strings.Contains(b.String(), "fix: sysctl -w") {
		t.Errorf("Write:\n%s", b.String())
	}
}

func FuzzParseForward(f *testing.F) {
	f.Add(saveOK)
	f.Fuzz(func(t *testing.T, s string) { parseForward(s) })
}

func TestParseARPCache(t *testing.T) {
	text := `entries  allocs   destroys hash_grows lookups  hits     res_failed rcv_probes_mcast rcv_probes_ucast periodic_gc_runs forced_gc_runs unresolved_discards table_fulls
00001d4c 00011c76 000137be 00000008   0001825b 000037e9 00000022   00000000         00000000         00000000         00000000       00000000            00000002
00001d4c 0000821e 000064da 00000003   0000de76 000030c0 00000043   00000000         00000000         000003f6         00000000       00000000            0000000a
`
	entries, fulls := parseARPCache(text)
	if entries != 0x1d4c || fulls != 12 {
		t.Fatalf("parseARPCache = %d entries, %d table fulls; want 7500, 12", entries, fulls)
	}
	if e, f := parseARPCache("garbage"); e != 0 || f != 0 {
		t.Fatalf("garbage parsed as %d, %d", e, f)
	}
}
