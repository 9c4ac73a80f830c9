package firewall

// vxbridge's nftables table, through nf_tables netlink (google/nftables):
// every read is a few dumps, every change one batch (nftBatch), every
// socket under a deadline, in the network namespace of the calling thread.
//
// Where its base chains sit: each hook's chain runs at docker's priority
// plus nftPriorityAfter, so the chains docker documents for operators'
// own rules (a table of theirs with a base chain at docker's priority,
// "filter" for forward) run first. nf_tables runs every base chain of a
// hook: a drop anywhere is final, an accept ends only its own chain. So an
// operator's drop decides before vxbridge's rules see the packet, and
// vxbridge's isolation drops hold whatever the other chains accept;
// vxbridge's accepts only end its own chain (docker's nftables chains have
// policy accept; an iptables FORWARD policy DROP, which docker sets only in
// its iptables mode, would still drop them, as docker says of its own).

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nftPriorityAfter puts vxbridge's base chains after docker's and the
// operators' at each hook's well-known priority.
const nftPriorityAfter = 10

// baseChains are the iptables built-in chains as base chains of our table.
var baseChains = map[string]struct {
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	priority nftables.ChainPriority
}{
	nftChainName(tableFilter, "INPUT"):    {nftables.ChainTypeFilter, nftables.ChainHookInput, *nftables.ChainPriorityFilter},
	nftChainName(tableFilter, "FORWARD"):  {nftables.ChainTypeFilter, nftables.ChainHookForward, *nftables.ChainPriorityFilter},
	nftChainName(tableFilter, "OUTPUT"):   {nftables.ChainTypeFilter, nftables.ChainHookOutput, *nftables.ChainPriorityFilter},
	nftChainName(tableNat, "PREROUTING"):  {nftables.ChainTypeNAT, nftables.ChainHookPrerouting, *nftables.ChainPriorityNATDest},
	nftChainName(tableNat, "OUTPUT"):      {nftables.ChainTypeNAT, nftables.ChainHookOutput, *nftables.ChainPriorityNATDest},
	nftChainName(tableNat, "INPUT"):       {nftables.ChainTypeNAT, nftables.ChainHookInput, *nftables.ChainPriorityNATSource},
	nftChainName(tableNat, "POSTROUTING"): {nftables.ChainTypeNAT, nftables.ChainHookPostrouting, *nftables.ChainPriorityNATSource},
	nftChainName(tableMangle, "FORWARD"):  {nftables.ChainTypeFilter, nftables.ChainHookForward, *nftables.ChainPriorityMangle},
}

func isBaseChain(name string) bool {
	_, ok := baseChains[name]
	return ok
}

// nftBuffer is the socket buffer for both directions: a batch goes out in
// one sendmsg, which netlink refuses when it exceeds the send buffer (about
// 1 MiB at 1000 published ports), and its acknowledgements come back into
// the receive buffer.
const nftBuffer = 32 << 20

// nftTable is vxbridge's table in one family.
type nftTable struct {
	ipv6    bool
	timeout time.Duration
	last    *nftListing // the listing the next apply's script was planned on
}

func (t *nftTable) String() string {
	if t.ipv6 {
		return "nftables table ip6 " + NFTTable
	}
	return "nftables table ip " + NFTTable
}

func (t *nftTable) family() nftables.TableFamily {
	if t.ipv6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

func (t *nftTable) table() *nftables.Table {
	return &nftables.Table{Name: NFTTable, Family: t.family()}
}

// conn opens a connection whose every socket gives up after t.timeout: a
// netlink request has no deadline of its own.
func (t *nftTable) conn() (*nftables.Conn, error) {
	return nftables.New(nftables.WithSockOptions(func(c *netlink.Conn) error {
		if err := forceBuffers(c, nftBuffer); err != nil {
			return err
		}
		return c.SetDeadline(time.Now().Add(t.timeout))
	}))
}

// forceBuffers sets both socket buffers past net.core.[rw]mem_max (root
// may); without the privilege, as far as those limits allow.
func forceBuffers(c *netlink.Conn, size int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], size) != nil {
				serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], size))
			}
		}
	})
	return errors.Join(err, serr)
}

// probe checks that nf_tables answers here.
func (t *nftTable) probe() error {
	c, err := t.conn()
	if err == nil {
		_, err = c.ListTablesOfFamily(t.family())
	}
	if err != nil {
		return fmt.Errorf("%s: nf_tables not usable: %w", t, err)
	}
	return nil
}

// read lists the table; a missing table reads as empty.
func (t *nftTable) read() (familyState, error) {
	l, err := t.list()
	if err != nil {
		return nil, err
	}
	t.last = l
	return l.state(), nil
}

func (t *nftTable) list() (*nftListing, error) {
	c, err := t.conn()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", t, err)
	}
	l := &nftListing{chains: map[string]*nftChainListing{}}
	chains, err := c.ListChainsOfTableFamily(t.family())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", t, err)
	}
	for _, ch := range chains {
		if ch.Table.Name != NFTTable {
			continue
		}
		l.exists = true
		rules, err := c.GetRules(t.table(), ch)
		if err != nil {
			return nil, fmt.Errorf("read %s chain %s: %w", t, ch.Name, err)
		}
		cl := &nftChainListing{}
		for _, r := range rules {
			cl.rules = append(cl.rules, nftListedRule{line: t.ruleText(ch.Name, r), handle: r.Handle})
		}
		l.chains[ch.Name] = cl
	}
	if !l.exists {
		// A table without chains still is ours to delete.
		tables, err := c.ListTablesOfFamily(t.family())
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", t, err)
		}
		for _, tb := range tables {
			l.exists = l.exists || tb.Name == NFTTable
		}
	}
	if l.exists {
		sets, err := c.GetSets(t.table())
		if err != nil {
			return nil, fmt.Errorf("read %s sets: %w", t, err)
		}
		l.sets = map[string]string{}
		for _, s := range sets {
			l.sets[s.Name] = s.KeyType.Name
		}
	}
	return l, nil
}

// ruleText is a listed rule as plan.go reads rules. One decodeRule cannot
// read gets a line of its own that no desired rule has, so the plan
// deletes it by its handle.
func (t *nftTable) ruleText(chain string, r *nftables.Rule) string {
	_, ipt, _ := iptablesChain(chain)
	if spec, ok := decodeRule(t.ipv6, r.Exprs, r.UserData); ok {
		return ruleLine(ipt, spec)
	}
	return fmt.Sprintf("-A %s (unreadable nftables rule, handle %d)", ipt, r.Handle)
}

// apply sends script, planned on the last read, as one batch.
func (t *nftTable) apply(s *restoreScript) error {
	if t.last == nil {
		return errors.New("nftables: apply without a read")
	}
	ops, err := nftBatch(t.ipv6, t.last, s)
	t.last = nil
	if err != nil || len(ops) == 0 {
		return err
	}
	c, err := t.conn()
	if err != nil {
		return fmt.Errorf("update %s: %w", t, err)
	}
	for _, op := range ops {
		if err := t.queue(c, op); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("update %s: %w", t, err)
	}
	return nil
}

// queue adds one operation to c's batch.
func (t *nftTable) queue(c *nftables.Conn, op nftOp) error {
	table := t.table()
	chain := &nftables.Chain{Name: op.chain, Table: table}
	switch op.kind {
	case nftAddTable:
		c.AddTable(table)
	case nftDelTable:
		c.DelTable(table)
	case nftAddChain:
		if b, ok := baseChains[op.chain]; ok {
			prio := nftables.ChainPriority(int32(b.priority) + nftPriorityAfter)
			policy := nftables.ChainPolicyAccept
			chain.Type, chain.Hooknum, chain.Priority, chain.Policy = b.typ, b.hook, &prio, &policy
		}
		c.AddChain(chain)
	case nftFlushChain:
		c.FlushChain(chain)
	case nftDelChain:
		c.DelChain(chain)
	case nftAddRule:
		c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: op.exprs, UserData: commentData(op.comment), Position: op.handle})
	case nftInsertRule:
		c.InsertRule(&nftables.Rule{Table: table, Chain: chain, Exprs: op.exprs, UserData: commentData(op.comment)})
	case nftDelRule:
		return c.DelRule(&nftables.Rule{Table: table, Chain: chain, Handle: op.handle})
	}
	return nil
}

// nftTimeout bounds each netlink exchange with nf_tables.
var nftTimeout = defaultLimits.timeout

// DockerNFTables says whether docker's nftables tables (ip or ip6
// docker-bridges) exist in the calling thread's namespace: docker runs
// with --firewall-backend=nftables.
func DockerNFTables() (bool, error) {
	t := &nftTable{timeout: nftTimeout}
	c, err := t.conn()
	if err != nil {
		return false, err
	}
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		tables, err := c.ListTablesOfFamily(fam)
		if err != nil {
			if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ENOENT) {
				return false, nil
			}
			return false, fmt.Errorf("list nftables tables: %w", err)
		}
		for _, tb := range tables {
			if tb.Name == dockerNFTTable {
				return true, nil
			}
		}
	}
	return false, nil
}

// dockerNFTTable is docker's table in its nftables mode.
const dockerNFTTable = "docker-bridges"

// NFTablesSave prints vxbridge's IPv4 nftables table as `iptables-save -t
// table` would print it, for doctor: chains declared first, then their
// rules; "" when the table does not exist.
func NFTablesSave(table string) (string, error) {
	t := &nftTable{timeout: nftTimeout}
	l, err := t.list()
	if err != nil || !l.exists {
		return "", err
	}
	return saveText(table, l.state()[table]), nil
}
