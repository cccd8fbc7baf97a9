package natrules

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// nftPart is the nftables side of the NAT maps: install, check, repair
// and sweep the ftpalg tables (github.com/google/nftables, on one lasting
// socket that only the owner goroutine uses: every method here but elems
// runs in its jobs), and add or delete a hole's map elements (elems: a
// transaction built in place, nftelems.go, on a pooled request socket).
type nftPart struct {
	cfg Config
	ns  nsRunner
	log *slog.Logger
	req *connPool

	nc   *nftables.Conn           // owner goroutine
	sets map[string]*nftables.Set // owner goroutine; by map name (names carry the family)
	gen  *genProbe                // owner goroutine; the canary's shortcut (canary.go)
	// ftpalg's own nf_tables commits, for the generation probe: started
	// and finished count attempts, own the successful ones.
	started, finished, own atomic.Uint64
}

// commit runs one nf_tables transaction of ftpalg's and counts it.
func (m *nftPart) commit(fn func() error) error {
	m.started.Add(1)
	defer m.finished.Add(1)
	err := fn()
	if err == nil {
		m.own.Add(1)
	}
	return err
}

// nftConn returns the lasting nftables netlink socket, opening it
// (in the manager's namespace) if needed.
func (m *nftPart) nftConn() (*nftables.Conn, error) {
	if m.nc != nil {
		return m.nc, nil
	}
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if m.ns.ns.IsOpen() {
		opts = append(opts, nftables.WithNetNSFd(int(m.ns.ns)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables netlink socket: %w", err)
	}
	m.nc = c
	return c, nil
}

// nftClose drops the socket; after an error the next call opens a
// fresh one, so no stale reply can be read as the answer to a later
// request.
func (m *nftPart) nftClose() {
	if m.nc != nil {
		m.nc.CloseLasting()
		m.nc = nil
	}
}

// nftFlush sends the batch queued on c (one kernel transaction).
func (m *nftPart) nftFlush(c *nftables.Conn) error {
	if err := m.commit(c.Flush); err != nil {
		m.nftClose()
		return err
	}
	return nil
}

func (m *nftPart) nftTable(f Family) *nftables.Table {
	return &nftables.Table{Name: nftTableName, Family: nftFamily(f)}
}

// nftSet describes a map of the table for element operations (and
// creation).
func (m *nftPart) nftSet(f Family, ms nftMapSpec) *nftables.Set {
	s := &nftables.Set{
		Table: m.nftTable(f), Name: ms.Name, IsMap: true, HasTimeout: true, Dynamic: true,
		Timeout: m.cfg.TTL, Size: uint32(m.cfg.MaxHoles),
		KeyType: nftables.MustConcatSetType(ms.Key...),
	}
	if len(ms.Data) == 1 {
		s.DataType = ms.Data[0]
	} else {
		s.DataType = nftables.MustConcatSetType(ms.Data...)
	}
	return s
}

// nftSetByName returns the map for element operations (cached; the set
// objects are only read by the library).
func (m *nftPart) nftSetByName(f Family, name string) *nftables.Set {
	if s := m.sets[name]; s != nil {
		return s
	}
	for _, ms := range nftStructure(m.cfg, f).Maps {
		if ms.Name == name {
			if m.sets == nil {
				m.sets = map[string]*nftables.Set{}
			}
			m.sets[name] = m.nftSet(f, ms)
			return m.sets[name]
		}
	}
	panic("natrules: unknown map " + name)
}

// nftTables reports which families have an ftpalg table.
func (m *nftPart) nftTables() (map[Family]bool, error) {
	c, err := m.nftConn()
	if err != nil {
		return nil, err
	}
	ts, err := c.ListTables()
	if err != nil {
		m.nftClose()
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	have := map[Family]bool{}
	for _, t := range ts {
		if t.Name != nftTableName {
			continue
		}
		switch t.Family {
		case nftables.TableFamilyIPv4:
			have[IPv4] = true
		case nftables.TableFamilyIPv6:
			have[IPv6] = true
		}
	}
	return have, nil
}

// nftSweep deletes the ftpalg tables of both families (with their
// maps and elements), in one transaction.
func (m *nftPart) nftSweep() error {
	have, err := m.nftTables()
	if err != nil {
		return err
	}
	if len(have) == 0 {
		return nil
	}
	c, _ := m.nftConn()
	for _, f := range []Family{IPv4, IPv6} {
		if have[f] {
			c.DelTable(m.nftTable(f))
			m.log.Debug("swept nftables table", "family", nftFamilyName(f), "table", nftTableName)
		}
	}
	if err := m.nftFlush(c); err != nil {
		return fmt.Errorf("delete nftables table %s: %w", nftTableName, err)
	}
	return nil
}

// timedElem is an element to (re-)add with its remaining lifetime.
type timedElem struct {
	nftElem
	ttl time.Duration
}

// nftInstall (re)creates the table of a family in one transaction:
// the old table, if replace, is deleted first; then the table, maps,
// chains, rules and the first elemsPerTx of the given elements are added.
// The datapath sees the old state or the new one, never a half-built
// table; beyond elemsPerTx, the other elements follow within
// milliseconds, in transactions of their own.
func (m *nftPart) nftInstall(f Family, replace bool, elems []timedElem) error {
	c, err := m.nftConn()
	if err != nil {
		return err
	}
	spec := nftStructure(m.cfg, f)
	t := m.nftTable(f)
	if replace {
		c.DelTable(t)
	}
	c.AddTable(t)
	sets := map[string]*nftables.Set{}
	for _, ms := range spec.Maps {
		s := m.nftSet(f, ms)
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("map %s: %w", ms.Name, err)
		}
		sets[ms.Name] = s
	}
	for _, cs := range spec.Chains {
		ch := c.AddChain(&nftables.Chain{
			Name: cs.Name, Table: t, Type: cs.Type, Hooknum: cs.Hook,
			Priority: nftables.ChainPriorityRef(nftables.ChainPriority(cs.Priority)),
		})
		for _, r := range cs.Rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: withSetIDs(r.Exprs, sets)})
		}
	}
	// The elements go in messages of a map each. The table's own
	// transaction carries the first elemsPerTx; the rest follow in
	// transactions of their own (nftAddMany), since one sendmsg must fit
	// the socket's buffer: a repair with thousands of NAT holes failed
	// with EMSGSIZE when it sent them all at once.
	first, rest := elems[:min(len(elems), elemsPerTx)], elems[min(len(elems), elemsPerTx):]
	byMap := map[string][]nftables.SetElement{}
	for _, e := range first {
		if sets[e.Map] != nil {
			byMap[e.Map] = append(byMap[e.Map], nftables.SetElement{Key: e.Key, Val: e.Data, Timeout: e.ttl})
		}
	}
	for name, els := range byMap {
		if err := c.SetAddElements(sets[name], els); err != nil {
			return err
		}
	}
	if err := m.nftFlush(c); err != nil {
		return fmt.Errorf("install nftables table %s %s: %w", nftFamilyName(f), nftTableName, err)
	}
	if err := m.nftAddMany(f, rest); err != nil {
		return fmt.Errorf("re-add %d nftables elements %s %s: %w", len(rest), nftFamilyName(f), nftTableName, err)
	}
	return nil
}

// withSetIDs copies exprs, setting the batch-local set IDs of lookups and
// dynsets (the sets are created in the same transaction).
func withSetIDs(exprs []expr.Any, sets map[string]*nftables.Set) []expr.Any {
	out := make([]expr.Any, len(exprs))
	for i, e := range exprs {
		switch x := e.(type) {
		case *expr.Lookup:
			y := *x
			if s := sets[y.SetName]; s != nil {
				y.SetID = s.ID
			}
			out[i] = &y
		case *expr.Dynset:
			y := *x
			if s := sets[y.SetName]; s != nil {
				y.SetID = s.ID
			}
			out[i] = &y
		default:
			out[i] = e
		}
	}
	return out
}

// nftCheck compares the family's table with the spec: table, maps,
// chains (type, hook, priority) and rule counts. It returns what drifted.
func (m *nftPart) nftCheck(f Family) ([]string, error) {
	have, err := m.nftTables()
	if err != nil {
		return nil, err
	}
	name := nftFamilyName(f) + " " + nftTableName
	if !have[f] {
		return []string{"nftables table " + name + " missing"}, nil
	}
	c, _ := m.nftConn()
	spec := nftStructure(m.cfg, f)
	t := m.nftTable(f)
	var drift []string
	sets, err := c.GetSets(t)
	if err != nil {
		m.nftClose()
		return nil, fmt.Errorf("list maps of %s: %w", name, err)
	}
	for _, ms := range spec.Maps {
		if !slices.ContainsFunc(sets, func(s *nftables.Set) bool { return s.Name == ms.Name && s.IsMap }) {
			drift = append(drift, fmt.Sprintf("nftables map %s %s missing", name, ms.Name))
		}
	}
	chains, err := c.ListChainsOfTableFamily(nftFamily(f))
	if err != nil {
		m.nftClose()
		return nil, fmt.Errorf("list chains of %s: %w", name, err)
	}
	for _, cs := range spec.Chains {
		i := slices.IndexFunc(chains, func(ch *nftables.Chain) bool { return ch.Table.Name == nftTableName && ch.Name == cs.Name })
		if i < 0 {
			drift = append(drift, fmt.Sprintf("nftables chain %s %s missing", name, cs.Name))
			continue
		}
		ch := chains[i]
		if ch.Type != cs.Type || ch.Hooknum == nil || *ch.Hooknum != *cs.Hook || ch.Priority == nil || int32(*ch.Priority) != cs.Priority {
			drift = append(drift, fmt.Sprintf("nftables chain %s %s changed", name, cs.Name))
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			m.nftClose()
			return nil, fmt.Errorf("list rules of %s %s: %w", name, cs.Name, err)
		}
		if len(rules) != len(cs.Rules) {
			drift = append(drift, fmt.Sprintf("nftables chain %s %s: %d rules, want %d", name, cs.Name, len(rules), len(cs.Rules)))
		}
	}
	return drift, nil
}

// nftLiveElems reads the elements of the family's maps that are in
// the kernel now, with their remaining lifetime. ok is false when a map
// cannot be read (gone).
func (m *nftPart) nftLiveElems(f Family) (es []timedElem, ok bool) {
	c, err := m.nftConn()
	if err != nil {
		return nil, false
	}
	for _, ms := range nftStructure(m.cfg, f).Maps {
		got, err := c.GetSetElements(m.nftSet(f, ms))
		if err != nil {
			m.nftClose()
			return nil, false
		}
		for _, e := range got {
			if e.Expires <= 0 {
				continue
			}
			es = append(es, timedElem{nftElem{Map: ms.Name, Key: e.Key, Data: e.Val}, e.Expires})
		}
	}
	return es, true
}

// elems adds (add) or deletes the elements of a hole in one
// transaction, on a pooled request socket (not the owner's: holes are
// opened concurrently). Adding with refresh replaces an existing element
// so that its timeout starts again on any kernel (delete + add). Deleting
// first adds the element, so that the transaction does not fail when the
// datapath has consumed it or it expired: delete is idempotent.
func (m *nftPart) elems(f Family, es []nftElem, add, refresh bool, ttl time.Duration) error {
	if len(es) == 0 {
		return nil
	}
	ops := make([]nftElemOp, 0, 3*len(es))
	queue := func(del bool) {
		for _, e := range es {
			ops = append(ops, nftElemOp{del: del, e: e})
		}
	}
	queue(false)
	if !add || refresh {
		queue(true)
	}
	if add && refresh {
		queue(false)
	}
	c, err := m.req.get()
	if err != nil {
		return fmt.Errorf("netfilter request socket: %w", err)
	}
	defer m.req.put(c)
	err = m.commit(func() error {
		return c.transact(len(ops), func(b []byte, seq uint32) []byte {
			return appendNftElemBatch(b, seq, byte(nftFamily(f)), ops, ttl)
		})
	})
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("nftables table %s %s or its maps missing: %w", nftFamilyName(f), nftTableName, err)
		}
		return err
	}
	return nil
}

// elemsPerTx is how many map elements one transaction carries (about
// 80 KB of messages).
const elemsPerTx = 1000

// nftAddMany adds many elements (a repair's remainder, benchmark
// pre-population), elemsPerTx per transaction.
func (m *nftPart) nftAddMany(f Family, es []timedElem) error {
	c, err := m.nftConn()
	if err != nil {
		return err
	}
	byMap := map[string][]nftables.SetElement{}
	for _, e := range es {
		byMap[e.Map] = append(byMap[e.Map], nftables.SetElement{Key: e.Key, Val: e.Data, Timeout: e.ttl})
	}
	for name, els := range byMap {
		s := m.nftSetByName(f, name)
		for len(els) > 0 {
			n := min(len(els), elemsPerTx)
			if err := c.SetAddElements(s, els[:n]); err != nil {
				m.nftClose()
				return err
			}
			if err := m.nftFlush(c); err != nil {
				return err
			}
			els = els[n:]
		}
	}
	return nil
}

// nftRepair re-creates the family's table in one transaction. The
// elements carried over are those in the kernel's maps if they can still
// be read (a flushed or deleted chain: holes consumed by the datapath stay
// consumed), else book, those of the live holes in the bookkeeping, with
// their remaining lifetime (the table or a map is gone).
func (m *nftPart) nftRepair(f Family, book []timedElem) error {
	have, err := m.nftTables()
	if err != nil {
		return err
	}
	var elems []timedElem
	ok := false
	if have[f] {
		elems, ok = m.nftLiveElems(f)
	}
	if !ok {
		elems = book
		if len(book) > 0 {
			m.log.Warn("nftables maps lost, re-adding the elements of live holes", "family", f, "elements", len(book))
		}
	}
	if err := m.nftInstall(f, have[f], elems); err != nil {
		return err
	}
	m.log.Warn("re-installed nftables table", "family", nftFamilyName(f), "table", nftTableName, "elements", len(elems))
	return nil
}

// close drops the socket and the probe. Owner goroutine.
func (m *nftPart) close() {
	m.nftClose()
	m.stopGenProbe()
}
