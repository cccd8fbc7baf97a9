package natrules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Defaults applied by New.
const (
	DefaultTTL         = 30 * time.Second
	DefaultMaxHoles    = 65536
	DefaultCapturePort = 21

	canaryInterval = 1500 * time.Millisecond
	gcInterval     = time.Second
)

// Stats are the manager's counters.
type Stats struct {
	Opened     uint64 // successful Open calls that installed or refreshed a hole
	Used       uint64 // holes whose one connection came through (the kernel consumed them)
	Revoked    uint64 // holes closed by Revoke/CloseSession before they were used
	Failed     uint64 // Open calls that returned an error
	Expired    uint64 // holes forgotten after their TTL without a Revoke
	Reinstalls uint64 // drift repairs by the canary
	GCRuns     uint64 // batched deletions of dead per-hole rules
	GCRules    uint64 // per-hole rules deleted by GC
	Conntrack  uint64 // conntrack entries deleted by CloseSession
	CtWalks    uint64 // conntrack table walks (the flow log's fallback)
	FlowLog    bool   // the flow log runs and has lost nothing recently
	FlowEvents uint64 // data connections seen by the flow log
	FlowLost   uint64 // flow log messages lost (ENOBUFS) or unreadable
	Live       int    // holes open now (per the manager's bookkeeping)
	DeadRules  int    // per-hole rules waiting for GC (inert)
}

type holeState struct {
	h       Hole
	rules   []Rule     // per-hole iptables rules (iptables backend)
	entries []setEntry // ipset members
	elems   []nftElem  // nftables map elements (nftables backend)
	expires time.Time
	used    bool // the kernel consumed the filter entry before the TTL
	refs    int  // openers that have not revoked it yet (see open)
	// arms counts the times the entries were armed (opened, re-armed;
	// under mu); consumed counts the first SYNs the flow log saw through
	// them (atomic: the log's reader does not take mu). Each arming is
	// consumed at most once, so consumed >= arms proves the kernel holds
	// nothing of the hole any more.
	arms     int32
	consumed atomic.Int32
}

// logged says whether the flow log saw every arming of the hole consumed.
func (st *holeState) logged() bool { return st.consumed.Load() >= st.arms }

// knownUsed says whether the hole is known consumed without asking the
// kernel.
func (st *holeState) knownUsed() bool { return st.used || st.logged() }

// Manager owns the gateway's iptables structure and its pinholes.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	fams []Family
	ns   nsRunner
	nl   *netlink.Handle
	ttl  uint32 // seconds

	iptMu sync.Mutex // serialises every iptables exec of this manager
	ipt   map[Family]*iptables.IPTables

	// nb is the NAT backend chosen by Setup: nftables maps, or per-hole
	// iptables rules when the ftpalg tables cannot be created. noNFT
	// forces the latter (tests).
	nb    natBackend
	noNFT bool
	// failNFLOG makes ensureStatic refuse the NFLOG rule, as a kernel
	// without the target does (tests).
	failNFLOG bool
	nftMu     sync.Mutex // serialises nftables netlink requests; after mu
	nc        *nftables.Conn
	nftSets   map[string]*nftables.Set // by map name (names carry the family)
	gen       *genProbe                // the canary's shortcut (canary.go); under nftMu
	req       reqConn                  // set members, NAT transactions (ipset.go)
	// expected static lines (chain declarations ":NAME" and "-A ..." lines
	// as iptables-save prints them), per family and table, captured after
	// install.
	expected map[Family]map[string][]string

	mu     sync.Mutex
	holes  map[holeKey]*holeState
	dead   map[holeKey][]Rule // inert per-hole rules waiting for GC
	fwdRef map[setEntry]int
	// lateDel: filter entries of logged holes, deleted by the janitor.
	lateDel []setEntry
	// idxMu guards entryHoles, the live holes by filter entry, and recent,
	// the last hole forgotten per entry (briefly): the flow log's reader
	// finds holes there without taking mu, which sessions hold across
	// netlink calls (one lock acquisition per data connection on a busy
	// mu made the reader fall seconds behind in the load test). Order:
	// mu, then idxMu.
	idxMu      sync.Mutex
	entryHoles map[setEntry][]*holeState
	recent     map[setEntry]recentHole
	// elemRef counts the live holes using an nftables element (snat
	// elements are keyed on the tuple after DNAT, which two holes may
	// share, like filter entries).
	elemRef map[string]*elemRef
	live    map[Family]int

	ready, setUp atomic.Bool
	flowOnce     sync.Once
	flowQ        chan flowBatch

	// The flow log (see flowlog.go), its flows, and the ctnetlink socket
	// for exact lookups. flog is nil when off or unavailable.
	flogMu    sync.Mutex
	flog      *flowLog
	flows     *flowTable
	ct        *ctConn
	lastPrune time.Time

	opened, revoked, failed, expired       atomic.Uint64
	used                                   atomic.Uint64
	reinstalls, gcRuns, gcRules, conntrack atomic.Uint64
	ctWalks                                atomic.Uint64

	janMu     sync.Mutex
	janCancel context.CancelFunc
	janDone   chan struct{}
	kick      chan struct{}
}

// New validates cfg, applies defaults and returns a manager. It makes no
// change to the kernel.
func New(cfg Config, log *slog.Logger) (*Manager, error) {
	return newManager(cfg, log, netns.None())
}

// newManager is New for a given network namespace (tests, benchmarks).
func newManager(cfg Config, log *slog.Logger, ns netns.NsHandle) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := validate(&cfg); err != nil {
		return nil, fmt.Errorf("natrules config: %w", err)
	}
	m := &Manager{
		cfg: cfg, log: log.With("component", "natrules"), ns: nsRunner{ns: ns},
		ttl:     uint32((cfg.TTL + time.Second - 1) / time.Second),
		ipt:     map[Family]*iptables.IPTables{},
		holes:   map[holeKey]*holeState{},
		dead:    map[holeKey][]Rule{},
		fwdRef:  map[setEntry]int{},
		elemRef: map[string]*elemRef{},
		live:    map[Family]int{},
		kick:    make(chan struct{}, 1),

		entryHoles: map[setEntry][]*holeState{},
		recent:     map[setEntry]recentHole{},
		flows:      newFlowTable(cfg.FlowTable),
	}
	if cfg.IPv4 {
		m.fams = append(m.fams, IPv4)
	}
	if cfg.IPv6 {
		m.fams = append(m.fams, IPv6)
	}
	var err error
	if ns.IsOpen() {
		m.nl, err = netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	} else {
		m.nl, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
	}
	if err != nil {
		return nil, fmt.Errorf("natrules: netlink socket: %w", err)
	}
	return m, nil
}

func validate(c *Config) error {
	var errs []error
	if !c.IPv4 && !c.IPv6 {
		errs = append(errs, errors.New("enable IPv4, IPv6 or both"))
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.TTL < time.Second || c.TTL > 24*time.Hour {
		errs = append(errs, fmt.Errorf("TTL %s out of range [1s, 24h]", c.TTL))
	}
	if c.MaxHoles == 0 {
		c.MaxHoles = DefaultMaxHoles
	}
	if c.MaxHoles < 1 || c.MaxHoles > 1<<24 {
		errs = append(errs, fmt.Errorf("MaxHoles %d out of range [1, %d]", c.MaxHoles, 1<<24))
	}
	if c.FlowTable == 0 {
		c.FlowTable = 4 * c.MaxHoles
	}
	if c.FlowTable < 0 || c.FlowTable > 1<<30 {
		errs = append(errs, fmt.Errorf("FlowTable %d out of range [0, %d]", c.FlowTable, 1<<30))
	}
	if c.Capture {
		if c.CapturePort == 0 {
			c.CapturePort = DefaultCapturePort
		}
		if c.ListenPort == 0 {
			errs = append(errs, errors.New("Capture needs ListenPort"))
		}
		if c.ListenPort == c.CapturePort && c.ListenPort != 0 {
			errs = append(errs, errors.New("ListenPort equals CapturePort"))
		}
		for _, i := range c.CaptureIfaces {
			if i == "" || len(i) >= unix.IFNAMSIZ || strings.ContainsAny(i, " \t\"'/\\!") {
				errs = append(errs, fmt.Errorf("bad capture interface name %q", i))
			}
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) enabled(f Family) bool { return slices.Contains(m.fams, f) }

// ---------------------------------------------------------------- setup

// Setup sweeps whatever an earlier instance left (chains, rules, sets) and
// installs the static structure for the enabled families. Running it twice
// gives the same ruleset (and forgets the holes of the first run).
func (m *Manager) Setup(ctx context.Context) error {
	start := time.Now()
	m.startFlowWorker()
	m.iptMu.Lock()
	defer m.iptMu.Unlock()
	m.ready.Store(false)
	m.setUp.Store(false)
	if err := m.initIPT(); err != nil {
		return fmt.Errorf("natrules setup: %w", err)
	}
	if err := m.openReqConn(); err != nil {
		return fmt.Errorf("natrules setup: netfilter request socket: %w", err)
	}
	m.mu.Lock()
	m.resetLocked()
	m.mu.Unlock()
	for _, f := range []Family{IPv4, IPv6} {
		if m.ipt[f] == nil {
			continue
		}
		if err := m.sweepRules(ctx, f); err != nil {
			return fmt.Errorf("natrules setup: sweep %s: %w", f, err)
		}
	}
	if err := m.sweepSets(ctx); err != nil {
		return fmt.Errorf("natrules setup: sweep sets: %w", err)
	}
	m.expected = nil
	m.nb = m.setupNFT()
	// The flow log first: the NFLOG rule goes in only if ftpalg holds the
	// group (another holder would be sent every data connection's SYN).
	m.startFlowLog()
	err := m.installStatic(ctx)
	if err != nil && m.flowLogNFLOG() {
		// A kernel without the NFLOG target (nft_log, xt_NFLOG) refuses
		// the rule: run without the flow log rather than not at all.
		m.log.Warn("NFLOG rule refused: flow log off, transfer byte counts and session cleanup will walk the conntrack table", "err", err)
		m.stopFlowLog()
		for _, f := range m.fams {
			if m.ipt[f] != nil {
				if err := m.sweepRules(ctx, f); err != nil {
					return fmt.Errorf("natrules setup: sweep %s: %w", f, err)
				}
			}
		}
		m.expected = nil
		err = m.installStatic(ctx)
	}
	if err != nil {
		return err
	}
	m.startGenProbe()
	m.ready.Store(true)
	m.setUp.Store(true)
	m.startJanitor()
	m.log.Info("static structure installed", "families", m.fams, "nat", m.nb, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// installStatic installs and records the static structure of every
// enabled family. Caller holds iptMu.
func (m *Manager) installStatic(ctx context.Context) error {
	for _, f := range m.fams {
		if err := m.ensureSets(f, true); err != nil {
			return fmt.Errorf("natrules setup %s: %w", f, err)
		}
		if err := m.ensureStatic(ctx, f); err != nil {
			return fmt.Errorf("natrules setup %s: %w", f, err)
		}
	}
	if err := m.snapshot(ctx); err != nil {
		return fmt.Errorf("natrules setup: %w", err)
	}
	return nil
}

// ruleCfg is the configuration the static rules are built from: without
// the flow log's group unless the flow log runs.
func (m *Manager) ruleCfg() Config {
	c := m.cfg
	if !m.flowLogNFLOG() {
		c.FlowLogGroup = 0
	}
	return c
}

// flowLogNFLOG says whether the hole chain logs to the flow log.
func (m *Manager) flowLogNFLOG() bool {
	l, _ := m.flowLogNow()
	return l != nil
}

// setupNFT sweeps the ftpalg nftables tables and creates them for the
// enabled families. If that fails (no nf_tables in the kernel, no
// concatenated NAT maps), it logs a warning, removes what it created, and
// returns the iptables fallback. Caller holds iptMu.
func (m *Manager) setupNFT() natBackend {
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	err := m.nftSweepLocked()
	if err == nil && m.noNFT {
		err = errors.New("disabled")
	}
	if err == nil {
		for _, f := range m.fams {
			if err = m.nftInstallLocked(f, false, nil); err != nil {
				break
			}
		}
	}
	if err != nil {
		m.log.Warn("nftables NAT maps unavailable: NAT holes fall back to one iptables-restore each", "err", err)
		if err := m.nftSweepLocked(); err != nil {
			m.log.Debug("nftables sweep", "err", err)
		}
		return natIPT
	}
	return natNFT
}

func (m *Manager) initIPT() error {
	for _, f := range []Family{IPv4, IPv6} {
		if m.ipt[f] != nil {
			continue
		}
		proto := iptables.ProtocolIPv4
		if f == IPv6 {
			proto = iptables.ProtocolIPv6
		}
		ipt, err := iptables.NewWithProtocol(proto)
		if err != nil {
			if m.enabled(f) {
				return fmt.Errorf("%s: %w", f, err)
			}
			continue // only needed to sweep
		}
		m.ipt[f] = ipt
	}
	return nil
}

func (m *Manager) resetLocked() {
	m.holes = map[holeKey]*holeState{}
	m.dead = map[holeKey][]Rule{}
	m.fwdRef = map[setEntry]int{}
	m.lateDel = nil
	m.idxMu.Lock()
	m.entryHoles = map[setEntry][]*holeState{}
	m.recent = map[setEntry]recentHole{}
	m.idxMu.Unlock()
	m.elemRef = map[string]*elemRef{}
	m.live = map[Family]int{}
}

type elemRef struct {
	data []byte
	n    int
}

// elemConflictLocked reports an element of es that a live hole holds with
// different data.
func (m *Manager) elemConflictLocked(es []nftElem) error {
	for _, e := range es {
		if r, ok := m.elemRef[e.ID()]; ok && !bytes.Equal(r.data, e.Data) {
			return fmt.Errorf("%s element %s conflicts with a live hole", e.Map, e.Text)
		}
	}
	return nil
}

func (m *Manager) refElemsLocked(es []nftElem) {
	for _, e := range es {
		r := m.elemRef[e.ID()]
		if r == nil {
			r = &elemRef{data: e.Data}
			m.elemRef[e.ID()] = r
		}
		r.n++
	}
}

// unrefElemsLocked drops references and returns the elements no live hole
// holds any more.
func (m *Manager) unrefElemsLocked(es []nftElem) []nftElem {
	var last []nftElem
	for _, e := range es {
		r := m.elemRef[e.ID()]
		if r == nil {
			continue
		}
		if r.n--; r.n <= 0 {
			delete(m.elemRef, e.ID())
			last = append(last, e)
		}
	}
	return last
}

// ipt runs a go-iptables call inside the namespace.
func (m *Manager) iptDo(fn func() error) error { return m.ns.do(fn) }

// sweepRules deletes every rule of ours from the built-in chains, then
// flushes and deletes every FTPALG- chain, in filter and nat.
func (m *Manager) sweepRules(ctx context.Context, f Family) error {
	ipt := m.ipt[f]
	for _, table := range []string{tFilter, tNAT} {
		st, err := m.ns.save(ctx, f, table)
		if err != nil {
			return err
		}
		for _, r := range st.rules {
			if strings.HasPrefix(r.chain, Prefix) || !r.ours() {
				continue
			}
			args, err := splitArgs(r.spec)
			if err != nil {
				return err
			}
			if err := m.iptDo(func() error { return ipt.DeleteIfExists(table, r.chain, args...) }); err != nil {
				return fmt.Errorf("delete %s: %w", r.line(), err)
			}
			m.log.Debug("swept rule", "family", f, "table", table, "rule", r.line())
		}
		var own []string
		for c := range st.chains {
			if strings.HasPrefix(c, Prefix) {
				own = append(own, c)
			}
		}
		slices.Sort(own)
		for _, c := range own {
			if err := m.iptDo(func() error { return ipt.ClearChain(table, c) }); err != nil {
				return fmt.Errorf("flush %s/%s: %w", table, c, err)
			}
		}
		for _, c := range own {
			if err := m.iptDo(func() error { return ipt.DeleteChain(table, c) }); err != nil {
				return fmt.Errorf("delete chain %s/%s: %w", table, c, err)
			}
			m.log.Debug("swept chain", "family", f, "table", table, "chain", c)
		}
	}
	return nil
}

// sweepSets destroys every FTPALG- set. The kernel may hold a reference
// for a moment after the last rule using a set is gone, so retry briefly.
func (m *Manager) sweepSets(ctx context.Context) error {
	sets, err := m.nl.IpsetListAll()
	if err != nil {
		return fmt.Errorf("list sets: %w", err)
	}
	for _, s := range sets {
		if !strings.HasPrefix(s.SetName, Prefix) {
			continue
		}
		deadline := time.Now().Add(3 * time.Second)
		for {
			err = m.nl.IpsetDestroy(s.SetName)
			if err == nil || time.Now().After(deadline) {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		if err != nil {
			return fmt.Errorf("destroy set %s: %w", s.SetName, err)
		}
		m.log.Debug("swept set", "set", s.SetName)
	}
	return nil
}

// ensureSets creates the family's sets if missing. When a set had to be
// created outside the initial setup, the live holes' entries are re-added
// with their remaining lifetime.
func (m *Manager) ensureSets(f Family, initial bool) error {
	fam := uint8(unix.AF_INET)
	if f == IPv6 {
		fam = unix.AF_INET6
	}
	names := []string{fwdSet(f)}
	if m.nb == natIPT {
		names = append(names, natSet(f))
	}
	for _, name := range names {
		err := m.nl.IpsetCreate(name, "hash:ip,port,ip", netlink.IpsetCreateOptions{
			Family: fam, Timeout: &m.ttl, MaxElements: uint32(m.cfg.MaxHoles),
		})
		if err != nil && errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return fmt.Errorf("create set %s: %w", name, err)
		}
		if initial {
			continue
		}
		m.log.Warn("set was missing, recreated", "set", name)
		m.mu.Lock()
		now := time.Now()
		for _, st := range m.holes {
			if st.knownUsed() {
				continue // consumed: re-adding would re-arm it
			}
			for _, e := range st.entries {
				if e.Set != name || !now.Before(st.expires) {
					continue
				}
				ttl := uint32(st.expires.Sub(now)/time.Second) + 1
				if err := m.addEntry(e, ttl); err != nil {
					m.log.Error("re-add set entry", "entry", e, "err", err)
				}
			}
		}
		m.mu.Unlock()
	}
	return nil
}

// ensureStatic (re)installs the static chains and jumps of a family that
// are not as expected. With no expected snapshot (initial setup) every own
// chain is rebuilt. If FTPALG-DNAT or FTPALG-SNAT is rebuilt, the per-hole
// rules of live holes are re-added in one iptables-restore. Caller holds
// iptMu.
func (m *Manager) ensureStatic(ctx context.Context, f Family) error {
	if m.failNFLOG && m.ruleCfg().FlowLogGroup != 0 {
		return errors.New("iptables: NFLOG target not found (test)")
	}
	ipt := m.ipt[f]
	rules := staticRules(m.ruleCfg(), f, m.nb)
	exp := m.expected[f]
	saved := map[string]map[string]bool{}
	holeLines := map[string]int{}
	if exp != nil {
		for _, table := range []string{tFilter, tNAT} {
			st, err := m.ns.save(ctx, f, table)
			if err != nil {
				return err
			}
			set := map[string]bool{}
			for c := range st.chains {
				set[":"+c] = true
			}
			for _, r := range st.rules {
				set[r.line()] = true
				if r.holeKeyString() != "" {
					holeLines[table]++
				}
			}
			saved[table] = set
		}
	}
	// intact reports whether every expected line of chain is present.
	intact := func(table, chain string) bool {
		if exp == nil {
			return false
		}
		if !saved[table][":"+chain] {
			return false
		}
		for _, l := range exp[table] {
			if strings.HasPrefix(l, "-A "+chain+" ") && !saved[table][l] {
				return false
			}
		}
		return true
	}
	rebuild := map[chainSpec]bool{}
	for _, c := range ownChains(m.cfg, m.nb) {
		if !intact(c.Table, c.Name) {
			rebuild[c] = true
		}
	}
	// Per-hole rules: if some vanished, rebuild both per-hole chains.
	m.mu.Lock()
	want := 0
	for _, st := range m.holes {
		if FamilyOf(st.h.From) == f {
			want += len(st.rules)
		}
	}
	for k, rs := range m.dead {
		if FamilyOf(k.From) == f {
			want += len(rs)
		}
	}
	m.mu.Unlock()
	if exp != nil && holeLines[tNAT] < want {
		m.log.Warn("per-hole rules missing", "family", f, "want", want, "have", holeLines[tNAT])
		rebuild[chainSpec{tNAT, chDNAT}] = true
	}
	if rebuild[chainSpec{tNAT, chDNAT}] || rebuild[chainSpec{tNAT, chSNAT}] {
		rebuild[chainSpec{tNAT, chDNAT}] = true
		rebuild[chainSpec{tNAT, chSNAT}] = true
	}
	for _, c := range ownChains(m.cfg, m.nb) {
		if !rebuild[c] {
			continue
		}
		if exp != nil {
			m.log.Warn("re-installing chain", "family", f, "table", c.Table, "chain", c.Name)
		}
		if err := m.iptDo(func() error { return ipt.ClearChain(c.Table, c.Name) }); err != nil {
			return fmt.Errorf("create chain %s/%s: %w", c.Table, c.Name, err)
		}
		for _, r := range rules {
			if r.Table != c.Table || r.Chain != c.Name {
				continue
			}
			if err := m.iptDo(func() error { return ipt.Append(r.Table, r.Chain, r.Args...) }); err != nil {
				return fmt.Errorf("install %s: %w", r, err)
			}
		}
	}
	if rebuild[chainSpec{tNAT, chDNAT}] {
		var rs []Rule
		m.mu.Lock()
		now := time.Now()
		for _, st := range m.holes {
			if FamilyOf(st.h.From) == f && now.Before(st.expires) {
				rs = append(rs, st.rules...)
			}
		}
		for k := range m.dead { // their rules went with the flush
			if FamilyOf(k.From) == f {
				delete(m.dead, k)
			}
		}
		m.mu.Unlock()
		if len(rs) > 0 {
			if err := m.ns.restore(ctx, f, restoreScript("-A", rs)); err != nil {
				return fmt.Errorf("re-add %d per-hole rules: %w", len(rs), err)
			}
			m.log.Info("re-added per-hole rules", "family", f, "rules", len(rs))
		}
	}
	for _, r := range rules {
		if !r.builtin() {
			continue
		}
		var ok bool
		err := m.iptDo(func() (err error) { ok, err = ipt.Exists(r.Table, r.Chain, r.Args...); return })
		if err != nil {
			return fmt.Errorf("check %s: %w", r, err)
		}
		if ok {
			continue
		}
		if exp != nil {
			m.log.Warn("re-installing jump", "family", f, "rule", r.String())
		}
		if err := m.iptDo(func() error { return ipt.Insert(r.Table, r.Chain, 1, r.Args...) }); err != nil {
			return fmt.Errorf("install %s: %w", r, err)
		}
	}
	return nil
}

// snapshot records the static structure as iptables-save prints it, and
// checks it is complete. Caller holds iptMu.
func (m *Manager) snapshot(ctx context.Context) error {
	exp := map[Family]map[string][]string{}
	for _, f := range m.fams {
		exp[f] = map[string][]string{}
		want := map[string]int{}
		for _, r := range staticRules(m.ruleCfg(), f, m.nb) {
			want[r.Table]++
		}
		for _, table := range []string{tFilter, tNAT} {
			st, err := m.ns.save(ctx, f, table)
			if err != nil {
				return err
			}
			var lines []string
			for c := range st.chains {
				if strings.HasPrefix(c, Prefix) {
					lines = append(lines, ":"+c)
				}
			}
			n := 0
			for _, r := range st.rules {
				if r.static() {
					lines = append(lines, r.line())
					n++
				}
			}
			if n != want[table] {
				return fmt.Errorf("%s %s: static structure not verified: %d rules of ours, want %d", f, table, n, want[table])
			}
			slices.Sort(lines)
			exp[f][table] = lines
		}
	}
	m.expected = exp
	return nil
}

// check compares the live ruleset with the snapshot. Caller holds iptMu.
func (m *Manager) check(ctx context.Context) (drift []string, err error) {
	for _, f := range m.fams {
		want := 0
		m.mu.Lock()
		for _, st := range m.holes {
			if FamilyOf(st.h.From) == f {
				want += len(st.rules)
			}
		}
		for k, rs := range m.dead {
			if FamilyOf(k.From) == f {
				want += len(rs)
			}
		}
		m.mu.Unlock()
		for _, table := range []string{tFilter, tNAT} {
			st, err := m.ns.save(ctx, f, table)
			if err != nil {
				return nil, err
			}
			have := map[string]bool{}
			for c := range st.chains {
				have[":"+c] = true
			}
			holes := 0
			for _, r := range st.rules {
				have[r.line()] = true
				if r.holeKeyString() != "" {
					holes++
				}
			}
			for _, l := range m.expected[f][table] {
				if !have[l] {
					drift = append(drift, fmt.Sprintf("%s %s: missing %s", f, table, l))
				}
			}
			if table == tNAT && holes < want {
				drift = append(drift, fmt.Sprintf("%s nat: %d per-hole rules, want %d", f, holes, want))
			}
		}
	}
	return drift, nil
}

// Teardown removes everything the manager owns (chains, jumps, sets, and
// the rules of any earlier instance); foreign rules are left untouched.
func (m *Manager) Teardown(ctx context.Context) error {
	m.stopJanitor()
	m.iptMu.Lock()
	defer m.iptMu.Unlock()
	m.ready.Store(false)
	m.setUp.Store(false)
	m.expected = nil
	if err := m.initIPT(); err != nil {
		return fmt.Errorf("natrules teardown: %w", err)
	}
	var errs []error
	for _, f := range []Family{IPv4, IPv6} {
		if m.ipt[f] == nil {
			continue
		}
		if err := m.sweepRules(ctx, f); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
		}
	}
	m.nftMu.Lock()
	if err := m.nftSweepLocked(); err != nil && m.nb == natNFT {
		errs = append(errs, err)
	}
	m.nftCloseLocked()
	m.stopGenProbeLocked()
	m.nftMu.Unlock()
	if err := m.sweepSets(ctx); err != nil {
		errs = append(errs, err)
	}
	m.mu.Lock()
	m.resetLocked()
	m.mu.Unlock()
	m.stopFlowLog()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("natrules teardown: %w", err)
	}
	m.log.Info("static structure removed")
	return nil
}

// ---------------------------------------------------------------- holes

func (m *Manager) addEntry(e setEntry, ttl uint32) error {
	return m.ipsetEntry(nl.IPSET_CMD_ADD, e, ttl)
}

// delEntry deletes e; a missing entry is not an error.
func (m *Manager) delEntry(e setEntry) error {
	return m.ipsetEntry(nl.IPSET_CMD_DEL, e, 0)
}

// Open installs a hole for one connection. When it returns nil the hole is
// in place in the kernel; the error carries the kernel's or iptables'
// message otherwise. Opening a live hole again refreshes its TTL.
func (m *Manager) Open(ctx context.Context, h Hole) error {
	err := m.open(ctx, h)
	if err != nil {
		m.failed.Add(1)
		return fmt.Errorf("open pinhole %s: %w", h, err)
	}
	m.opened.Add(1)
	return nil
}

func (m *Manager) open(ctx context.Context, h Hole) error {
	h, err := normalize(h)
	if err != nil {
		return err
	}
	f := FamilyOf(h.From)
	if !m.enabled(f) {
		return fmt.Errorf("%s not enabled", f)
	}
	if !m.setUp.Load() {
		return errors.New("not set up")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	k := keyOf(h)
	nb := m.nb
	rules := holeRules(h, nb)
	entries := holeEntries(h, nb)
	var elems []nftElem
	if nb == natNFT {
		elems = holeElems(h)
	}
	if len(rules) > 0 {
		m.iptMu.Lock()
		defer m.iptMu.Unlock()
	}
	m.mu.Lock()
	if st, ok := m.holes[k]; ok {
		if st.h != h {
			m.mu.Unlock()
			return fmt.Errorf("conflicts with live hole %s", st.h)
		}
		// The same hole again: another session (or a retry) expects the
		// same connection, e.g. a client whose second session got the
		// server's recycled passive port. The kernel entry is re-armed and
		// shared; each opener holds a reference, and only the last Revoke
		// closes it (an earlier one would cut the other session's hole).
		consumed := m.consumedLocked(st)
		m.armed(k) // before the kernel can see a SYN
		err := m.addEntriesLocked(st.entries, false)
		if err == nil {
			err = m.nftElems(f, st.elems, true, true)
		}
		if err == nil {
			// The previous opening is settled now; the new one is
			// settled when the last reference goes.
			if consumed {
				m.used.Add(1)
			} else {
				m.revoked.Add(1)
			}
			st.expires, st.used = time.Now().Add(m.cfg.TTL), false
			st.refs++
			st.arms++
		}
		m.mu.Unlock()
		return err
	}
	if m.live[f] >= m.cfg.MaxHoles {
		m.mu.Unlock()
		return fmt.Errorf("%d live %s holes: limit reached", m.live[f], f)
	}
	if err := m.elemConflictLocked(elems); err != nil {
		m.mu.Unlock()
		return err
	}
	installed := false
	if len(rules) > 0 {
		if d, ok := m.dead[k]; ok && slices.EqualFunc(d, rules, ruleEqual) {
			delete(m.dead, k) // inert rules still in place: reuse them
			installed = true
		}
	}
	m.mu.Unlock()
	if len(rules) > 0 && !installed {
		if err := m.ns.restore(ctx, f, restoreScript("-A", rules)); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := &holeState{h: h, rules: rules, entries: entries, elems: elems, refs: 1, arms: 1}
	m.armed(k) // before the kernel can see a SYN
	if err := m.addEntriesLocked(entries, true); err != nil {
		if len(rules) > 0 {
			m.dead[k] = rules
			m.kickGC()
		}
		return err
	}
	// The NAT elements (the gate) go in last, in one transaction.
	if err := m.nftElems(f, elems, true, false); err != nil {
		for _, e := range entries {
			m.unrefLocked(e, true)
		}
		return fmt.Errorf("nftables add: %w", err)
	}
	m.refElemsLocked(elems)
	st.expires = time.Now().Add(m.cfg.TTL)
	m.holes[k] = st
	m.live[f]++
	fe := entries[0]
	m.idxMu.Lock()
	m.entryHoles[fe] = append(m.entryHoles[fe], st)
	m.idxMu.Unlock()
	return nil
}

// nftElems adds (add) or deletes a hole's map elements; see
// nftElemsLocked.
func (m *Manager) nftElems(f Family, es []nftElem, add, refresh bool) error {
	if len(es) == 0 {
		return nil
	}
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	return m.nftElemsLocked(f, es, add, refresh, m.cfg.TTL)
}

func ruleEqual(a, b Rule) bool {
	return a.Table == b.Table && a.Chain == b.Chain && slices.Equal(a.Args, b.Args)
}

// addEntriesLocked adds the entries in order (the nat gate last). With
// fresh, filter-entry reference counts are taken; on failure everything
// added is undone.
func (m *Manager) addEntriesLocked(es []setEntry, fresh bool) error {
	for i, e := range es {
		if err := m.addEntry(e, m.ttl); err != nil {
			if fresh {
				for _, u := range es[:i] {
					m.unrefLocked(u, true)
				}
			}
			return fmt.Errorf("ipset add %s: %w", e, err)
		}
		if fresh {
			m.fwdRef[e]++
		}
	}
	return nil
}

// unrefLocked drops a reference; the kernel entry is deleted when the last
// one goes (and del is set).
func (m *Manager) unrefLocked(e setEntry, del bool) error {
	m.fwdRef[e]--
	if m.fwdRef[e] > 0 {
		return nil
	}
	delete(m.fwdRef, e)
	if !del {
		return nil
	}
	if err := m.delEntry(e); err != nil {
		return fmt.Errorf("ipset del %s: %w", e, err)
	}
	return nil
}

// Revoke closes a hole: its set entries are deleted over netlink (the
// gate closes at once) and its per-hole rules, now inert, are queued for a
// batched deletion. Revoking an unknown hole is not an error.
func (m *Manager) Revoke(ctx context.Context, h Hole) error {
	h, err := normalize(h)
	if err != nil {
		return fmt.Errorf("revoke pinhole %s: %w", h, err)
	}
	m.drainFlowLog() // is the hole used? the log may know
	m.mu.Lock()
	defer m.mu.Unlock()
	k := keyOf(h)
	st, ok := m.holes[k]
	if !ok || st.h != h {
		// Unknown, or another session's hole on the same key (this one
		// expired and its port was lent again): not ours to close.
		return nil
	}
	if st.refs > 1 {
		st.refs-- // another opener still expects it
		return nil
	}
	var errs []error
	consumed := m.consumedLocked(st)
	if consumed {
		m.used.Add(1)
	} else {
		m.revoked.Add(1)
	}
	// nat gate first. The flow log's word that the kernel consumed the
	// hole (its elements go with the first SYN) saves the nftables
	// transaction; the filter entry, the gate, is deleted regardless.
	if gone := m.unrefElemsLocked(st.elems); !st.logged() {
		if err := m.nftElems(FamilyOf(k.From), gone, false, false); err != nil {
			errs = append(errs, fmt.Errorf("nftables delete: %w", err))
		}
	}
	// A logged hole's filter entries went with its SYN: deleting them is a
	// safety net, done by the janitor, off the relay's path.
	logged := st.logged()
	for _, e := range slices.Backward(st.entries) {
		if logged && m.fwdRef[e] == 1 {
			m.unrefLocked(e, false)
			m.lateDel = append(m.lateDel, e)
			continue
		}
		if err := m.unrefLocked(e, true); err != nil {
			errs = append(errs, err)
		}
	}
	m.forgetLocked(k, st)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("revoke pinhole %s: %w", h, err)
	}
	return nil
}

// deleteLate deletes the filter entries of logged holes that Revoke left
// to the janitor, if the kernel still has them (normally not: the SYN took
// them) and no live hole holds them again. One listing per set serves the
// whole batch.
func (m *Manager) deleteLate() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.lateDel) == 0 {
		return
	}
	present := map[string]map[setEntry]bool{}
	for _, e := range m.lateDel {
		if m.fwdRef[e] > 0 {
			continue // re-armed for a live hole: it is that hole's now
		}
		in, ok := present[e.Set]
		if !ok {
			in = m.setMembers(e.Set)
			present[e.Set] = in
		}
		if in != nil && !in[e] {
			continue
		}
		if err := m.delEntry(e); err != nil {
			m.log.Warn("delete consumed filter entry", "entry", e, "err", err)
		}
	}
	m.lateDel = m.lateDel[:0]
}

// setMembers lists a filter set's entries; nil if it cannot (then every
// entry is deleted blindly).
func (m *Manager) setMembers(set string) map[setEntry]bool {
	res, err := m.nl.IpsetList(set)
	if err != nil {
		return nil
	}
	in := map[setEntry]bool{}
	for _, x := range res.Entries {
		if x.Port == nil {
			continue
		}
		src, _ := netip.AddrFromSlice(x.IP)
		dst, _ := netip.AddrFromSlice(x.IP2)
		in[setEntry{Set: set, Src: src.Unmap(), Port: *x.Port, Dst: dst.Unmap()}] = true
	}
	return in
}

func (m *Manager) forgetLocked(k holeKey, st *holeState) {
	delete(m.holes, k)
	if len(st.entries) > 0 {
		fe := st.entries[0]
		m.idxMu.Lock()
		ks := slices.DeleteFunc(m.entryHoles[fe], func(x *holeState) bool { return x == st })
		if len(ks) == 0 {
			delete(m.entryHoles, fe)
		} else {
			m.entryHoles[fe] = ks
		}
		m.recent[fe] = recentHole{k: k, at: time.Now()}
		m.idxMu.Unlock()
	}
	m.flows.dropIdle(k)
	m.live[FamilyOf(k.From)]--
	if len(st.rules) > 0 {
		m.dead[k] = st.rules
		m.kickGC()
	}
}

// CloseSession ends one session's use of the firewall. It revokes the
// session's outstanding holes (open) and deletes the tracked connections
// that came through them, so that the session's data connections do not
// outlive it. A hole that is live for another session (same client, server
// and port) keeps its connections: deleting them would cut that session's
// transfer. The connections of holes the session superseded earlier
// (opened, its history) are left alone and only forgotten: by then another
// session of the same client may have been given the same server port,
// and its running transfer would be cut (the 2,000-session load test saw
// one in 37,000); FTP ends a transfer before the next one begins, and the
// server closes its side when the session ends.
func (m *Manager) CloseSession(ctx context.Context, open, opened []Hole) error {
	var errs []error
	for _, h := range open {
		if err := m.Revoke(ctx, h); err != nil {
			errs = append(errs, err)
		}
	}
	notLive := func(hs []Hole, seen map[holeKey]bool) []Hole {
		var out []Hole
		for _, h := range hs {
			h, err := normalize(h)
			if err != nil {
				continue
			}
			k := keyOf(h)
			m.mu.Lock()
			_, live := m.holes[k]
			m.mu.Unlock()
			if !seen[k] && !live {
				seen[k] = true
				out = append(out, h)
			}
		}
		return out
	}
	seen := map[holeKey]bool{}
	gone := notLive(open, seen)
	for _, h := range notLive(opened, seen) {
		m.flows.drop(keyOf(h))
	}
	walk, err := m.deleteKnownFlows(gone)
	if err != nil {
		errs = append(errs, err)
	}
	if len(walk) > 0 {
		if err := m.deleteFlows(ctx, walk); err != nil {
			errs = append(errs, fmt.Errorf("delete tracked connections: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close session: %w", err)
	}
	return nil
}

// Forget says a session no longer needs what the flow log learnt about h
// (it fell out of the session's history): unless h is live again, its
// flows leave the table, so a long session keeps a bounded share of it.
func (m *Manager) Forget(h Hole) {
	h, err := normalize(h)
	if err != nil {
		return
	}
	k := keyOf(h)
	m.mu.Lock()
	_, live := m.holes[k]
	m.mu.Unlock()
	if !live {
		m.flows.drop(k)
	}
}

// ---------------------------------------------------------------- background

// flowBatch is one session's request to delete tracked connections.
type flowBatch struct {
	holes []Hole
	done  chan error
}

// deleteFlows deletes the tracked connections of holes. Sessions that end
// together (a burst of QUITs, a shutdown) share the conntrack lookups: one
// worker merges the requests that arrive while it works, so thousands of
// endings cost a few table walks, not thousands.
func (m *Manager) deleteFlows(ctx context.Context, holes []Hole) error {
	m.startFlowWorker()
	b := flowBatch{holes: holes, done: make(chan error, 1)}
	select {
	case m.flowQ <- b:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-b.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startFlowWorker starts the worker once (at Setup, so that a daemon at
// rest has a constant set of goroutines).
func (m *Manager) startFlowWorker() {
	m.flowOnce.Do(func() {
		m.flowQ = make(chan flowBatch, 1024)
		go m.flowWorker()
	})
}

func (m *Manager) flowWorker() {
	for first := range m.flowQ {
		batch := []flowBatch{first}
		for more := true; more && len(batch) < 4096; {
			select {
			case b := <-m.flowQ:
				batch = append(batch, b)
			default:
				more = false
			}
		}
		var holes []Hole
		for _, b := range batch {
			holes = append(holes, b.holes...)
		}
		err := m.ns.do(func() error {
			flows, walks, err := holeFlows(holes)
			m.ctWalks.Add(uint64(walks))
			ct, derr := dialCt()
			if derr != nil {
				return errors.Join(err, derr)
			}
			defer ct.close()
			for _, fs := range flows {
				for _, f := range fs {
					ok, derr := ct.delete(f)
					if derr != nil {
						err = errors.Join(err, derr)
						continue
					}
					if ok {
						m.conntrack.Add(1)
					}
				}
			}
			return err
		})
		for _, b := range batch {
			b.done <- err
		}
	}
}

func (m *Manager) kickGC() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func (m *Manager) startJanitor() {
	m.janMu.Lock()
	defer m.janMu.Unlock()
	if m.janCancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.janCancel, m.janDone = cancel, make(chan struct{})
	go m.janitor(ctx, m.janDone)
}

func (m *Manager) stopJanitor() {
	m.janMu.Lock()
	defer m.janMu.Unlock()
	if m.janCancel == nil {
		return
	}
	m.janCancel()
	<-m.janDone
	m.janCancel, m.janDone = nil, nil
}

// janitor forgets expired holes and deletes dead per-hole rules, at most
// once per gcInterval, in one iptables-restore per family.
func (m *Manager) janitor(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(gcInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.kick:
			// batch: let more revokes arrive
			select {
			case <-ctx.Done():
				return
			case <-time.After(gcInterval):
			}
		}
		m.drainFlowLog()
		m.markUsed()
		m.expire()
		m.deleteLate()
		m.pruneFlows()
		if err := m.gc(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("per-hole rule GC failed", "err", err)
		}
	}
}

func (m *Manager) expire() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for k, st := range m.holes {
		if now.Before(st.expires) {
			continue
		}
		// The kernel has dropped the entries already (same TTL, set
		// earlier); only the bookkeeping goes.
		for _, e := range st.entries {
			m.unrefLocked(e, false)
		}
		m.unrefElemsLocked(st.elems)
		m.forgetLocked(k, st)
		if st.knownUsed() {
			m.used.Add(1)
		} else {
			m.expired.Add(1)
		}
	}
}

// consumedLocked reports whether the kernel has consumed the hole's filter
// entry (the SET --del-set on its first SYN) while its TTL still ran.
func (m *Manager) consumedLocked(st *holeState) bool {
	if st.knownUsed() {
		return true
	}
	// Not (yet) in the flow log, or the log is off: ask the kernel.
	if len(st.entries) == 0 || !time.Now().Before(st.expires.Add(-time.Second)) {
		return false // too close to the TTL to tell use from expiry
	}
	e := st.entries[0]
	proto := uint8(unix.IPPROTO_TCP)
	p := e.Port
	present, err := m.nl.IpsetTest(e.Set, &netlink.IPSetEntry{
		IP: net.IP(e.Src.AsSlice()), Port: &p, Protocol: &proto, IP2: net.IP(e.Dst.AsSlice()), Replace: true,
	})
	return err == nil && !present
}

// markUsed finds the live holes the kernel has consumed, with one dump per
// filter set, so that holes used and then left to their TTL count as used.
func (m *Manager) markUsed() {
	if m.flowLogMarksUsed() {
		return // the flow log marks them as they are used
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	sets := map[string]map[setEntry]bool{}
	now := time.Now()
	for _, st := range m.holes {
		if st.knownUsed() || len(st.entries) == 0 || !now.Before(st.expires.Add(-time.Second)) {
			continue
		}
		e := st.entries[0]
		present, ok := sets[e.Set]
		if !ok {
			res, err := m.nl.IpsetList(e.Set)
			if err != nil {
				m.flowLogRescan() // what the flow log could not mark waits for the next round
				return
			}
			present = map[setEntry]bool{}
			for _, x := range res.Entries {
				if x.Port == nil {
					continue
				}
				src, _ := netip.AddrFromSlice(x.IP)
				dst, _ := netip.AddrFromSlice(x.IP2)
				present[setEntry{Set: e.Set, Src: src.Unmap(), Port: *x.Port, Dst: dst.Unmap()}] = true
			}
			sets[e.Set] = present
		}
		if !present[e] {
			st.used = true
		}
	}
}

// gc deletes dead per-hole rules. Normally one exec per family with
// "-D" by specification; if that fails (rules flushed externally) it falls
// back to reading the table and deleting what is actually there, including
// orphans with unknown keys.
func (m *Manager) gc(ctx context.Context) error {
	m.iptMu.Lock()
	defer m.iptMu.Unlock()
	m.mu.Lock()
	if len(m.dead) == 0 {
		m.mu.Unlock()
		return nil
	}
	byFam := map[Family][]Rule{}
	keys := map[Family][]holeKey{}
	for k, rs := range m.dead {
		f := FamilyOf(k.From)
		byFam[f] = append(byFam[f], rs...)
		keys[f] = append(keys[f], k)
	}
	live := map[string]bool{}
	for k, st := range m.holes {
		if len(st.rules) > 0 {
			live[k.String()] = true
		}
	}
	m.mu.Unlock()
	var errs []error
	for f, rs := range byFam {
		n := len(rs)
		err := m.ns.restore(ctx, f, restoreScript("-D", rs))
		if err != nil {
			m.log.Warn("per-hole GC by spec failed, rescanning", "family", f, "err", err)
			n, err = m.gcScan(ctx, f, live)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.gcRuns.Add(1)
		m.gcRules.Add(uint64(n))
		m.mu.Lock()
		for _, k := range keys[f] {
			delete(m.dead, k)
		}
		m.mu.Unlock()
	}
	return errors.Join(errs...)
}

func (m *Manager) gcScan(ctx context.Context, f Family, live map[string]bool) (int, error) {
	st, err := m.ns.save(ctx, f, tNAT)
	if err != nil {
		return 0, err
	}
	var b strings.Builder
	n := 0
	b.WriteString("*nat\n")
	for _, r := range st.rules {
		if k := r.holeKeyString(); k != "" && !live[k] {
			b.WriteString("-D " + r.chain + " " + r.spec + "\n")
			n++
		}
	}
	b.WriteString("COMMIT\n")
	if n == 0 {
		return 0, nil
	}
	return n, m.ns.restore(ctx, f, []byte(b.String()))
}

// Run watches the canary until ctx is done: every ~1.5 s it verifies the
// static structure and the per-hole rules with one iptables-save per table
// and family, and re-installs whatever drifted (an external iptables -F, a
// firewall reload), re-adding the per-hole rules of live holes.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(canaryInterval)
	defer t.Stop()
	var lastFull time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if m.unchanged(lastFull) {
			continue
		}
		lastFull = time.Now()
		if err := m.verify(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("canary check failed", "err", err)
		}
	}
}

func (m *Manager) verify(ctx context.Context) error {
	m.iptMu.Lock()
	defer m.iptMu.Unlock()
	if m.expected == nil {
		return nil // not set up (or torn down)
	}
	drift, nftDrift, err := m.checkAll(ctx)
	if err != nil {
		m.ready.Store(false)
		return err
	}
	if len(drift) == 0 {
		m.ready.Store(true)
		return nil
	}
	m.ready.Store(false)
	m.log.Warn("drift detected, re-installing", "drift", drift)
	start := time.Now()
	for _, f := range m.fams {
		if err := m.ensureSets(f, false); err != nil {
			return fmt.Errorf("re-install %s: %w", f, err)
		}
		if err := m.ensureStatic(ctx, f); err != nil {
			return fmt.Errorf("re-install %s: %w", f, err)
		}
		if nftDrift[f] {
			if err := m.nftRepair(f); err != nil {
				return fmt.Errorf("re-install %s: %w", f, err)
			}
		}
	}
	m.reinstalls.Add(1)
	drift, _, err = m.checkAll(ctx)
	if err != nil {
		return err
	}
	if len(drift) > 0 {
		return fmt.Errorf("still drifted after re-install: %v", drift)
	}
	m.ready.Store(true)
	m.log.Info("re-installed", "took", time.Since(start).Round(time.Millisecond), "reinstalls", m.reinstalls.Load())
	return nil
}

// checkAll is check plus, with the nftables backend, the ftpalg tables.
// Caller holds iptMu.
func (m *Manager) checkAll(ctx context.Context) (drift []string, nftDrift map[Family]bool, err error) {
	drift, err = m.check(ctx)
	if err != nil || m.nb != natNFT {
		return drift, nil, err
	}
	nftDrift = map[Family]bool{}
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	for _, f := range m.fams {
		d, err := m.nftCheckLocked(f)
		if err != nil {
			return nil, nil, err
		}
		if len(d) > 0 {
			nftDrift[f] = true
			drift = append(drift, d...)
		}
	}
	return drift, nftDrift, nil
}

// Ready reports whether the static structure was verified in place (by
// Setup or the last canary check).
func (m *Manager) Ready() bool { return m.ready.Load() }

// Stats returns the counters.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	live, dead := len(m.holes), 0
	for _, rs := range m.dead {
		dead += len(rs)
	}
	m.mu.Unlock()
	st := Stats{
		Opened: m.opened.Load(), Revoked: m.revoked.Load(), Failed: m.failed.Load(),
		Expired: m.expired.Load(), Reinstalls: m.reinstalls.Load(), Used: m.used.Load(),
		GCRuns: m.gcRuns.Load(), GCRules: m.gcRules.Load(), Conntrack: m.conntrack.Load(),
		CtWalks: m.ctWalks.Load(), Live: live, DeadRules: dead,
	}
	m.flogMu.Lock()
	if l := m.flog; l != nil {
		st.FlowLog, st.FlowEvents, st.FlowLost = l.trusted(), l.events.Load(), l.lost.Load()
	}
	m.flogMu.Unlock()
	return st
}

// openBatch installs many holes with one iptables-restore per family (used
// to pre-populate benchmarks). Same semantics as calling Open on each.
func (m *Manager) openBatch(ctx context.Context, hs []Hole) error {
	m.iptMu.Lock()
	defer m.iptMu.Unlock()
	byFam := map[Family][]Rule{}
	var norm []Hole
	for _, h := range hs {
		h, err := normalize(h)
		if err != nil {
			return err
		}
		norm = append(norm, h)
		byFam[FamilyOf(h.From)] = append(byFam[FamilyOf(h.From)], holeRules(h, m.nb)...)
	}
	for f, rs := range byFam {
		if len(rs) > 0 {
			if err := m.ns.restore(ctx, f, restoreScript("-A", rs)); err != nil {
				return err
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var elems map[Family][]timedElem
	if m.nb == natNFT {
		elems = map[Family][]timedElem{}
	}
	for _, h := range norm {
		st := &holeState{h: h, rules: holeRules(h, m.nb), entries: holeEntries(h, m.nb)}
		if elems != nil {
			st.elems = holeElems(h)
			m.refElemsLocked(st.elems)
			for _, e := range st.elems {
				elems[FamilyOf(h.From)] = append(elems[FamilyOf(h.From)], timedElem{e, m.cfg.TTL})
			}
		}
		if err := m.addEntriesLocked(st.entries, true); err != nil {
			return err
		}
		st.expires = time.Now().Add(m.cfg.TTL)
		m.holes[keyOf(h)] = st
		m.live[FamilyOf(h.From)]++
		m.opened.Add(1)
	}
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	for f, es := range elems {
		if err := m.nftAddManyLocked(f, es); err != nil {
			return err
		}
	}
	return nil
}
