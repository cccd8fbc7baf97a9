package natrules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ftpalg/ftpalg/natrules/internal/holetab"
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

// The parts the manager composes, as it uses them. Each has its own state
// and lock (if any); none is held across a kernel call.
type (
	// holeSets is the filter half of the holes: ipset members (sets.go).
	holeSets interface {
		add(e setEntry, ttl uint32) error
		del(e setEntry) error
		test(e setEntry) (present bool, err error)
		members(set string) (map[setEntry]bool, error)
	}
	// natBackend is the NAT half: nftables map elements, or per-hole
	// iptables rules without nf_tables (backend.go).
	natBackend interface {
		kind() natKind
		parts(h Hole) holetab.Parts // in kernel order: the gate last
		// prepare runs before the set members are added, arm after
		// them (the NAT gate opens last), disarm before they go.
		prepare(ctx context.Context, h Hole) error
		arm(f Family, es []nftElem, refresh bool) error
		disarm(f Family, es []nftElem) error
		drop(h Hole) // h left the table
		deadRules() int
	}
	// staticPart is the static structure and its canary (static.go).
	staticPart interface {
		setup(ctx context.Context) (natKind, error)
		adopt(ctx context.Context) (natKind, []Claim, error) // adopt.go
		verify(ctx context.Context, drifted func()) (ready, repaired bool, err error)
		unchanged(lastFull time.Time) bool
		teardown(ctx context.Context) error
		close()
	}
	// flowTracker is the flow log and the flows it learnt (flows.go).
	flowTracker interface {
		start() // binds the NFLOG group; failing is not fatal
		stop()  // lets go of it
		armed(k holeKey)
		drain()
		forgot(k holeKey) // the hole left the table
		drop(k holeKey)   // its session needs its flows no more
		bytes(holes []Hole) ([]uint64, error)
		deleteKnown(holes []Hole) (walk []Hole, err error)
		prune()
		marksUsed() bool
		rescan()
		stats(*Stats)
	}
	// flowCleaner deletes tracked connections by walking the conntrack
	// table (flowworker.go).
	flowCleaner interface {
		start()
		clean(ctx context.Context, holes []Hole) error
		close()
	}
)

// Manager owns the gateway's iptables structure and its pinholes.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	fams []Family
	ns   nsRunner
	ttl  uint32 // seconds

	tab   *holetab.Table
	sets  holeSets
	st    staticPart
	flow  flowTracker
	clean flowCleaner
	cnt   *counters
	jan   janitor
	nat   atomic.Pointer[natBox] // chosen by Setup
	nats  map[natKind]natBackend
	iptb  *iptBackend // for gc; nil in root-free tests
	close []func()
	trim  func() // closes idle pooled sockets a burst left (janitor)

	ready, setUp   atomic.Bool
	detached       atomic.Bool // handing over to a new process (adopt.go)
	opened, failed atomic.Uint64
	reinstalls     atomic.Uint64
	closeOnce      sync.Once
}

type natBox struct{ natBackend }

// New validates cfg, applies defaults and returns a manager. It makes no
// change to the kernel.
func New(cfg Config, log *slog.Logger, opts ...Option) (*Manager, error) {
	o := options{ns: netns.None()}
	for _, opt := range opts {
		opt(&o)
	}
	m, err := compose(cfg, log)
	if err != nil {
		return nil, err
	}
	m.ns = nsRunner{ns: o.ns}
	req, nlp := newConnPool(m.ns), newNLPool(m.ns)
	// The first netlink socket now, so that a bad environment fails here.
	if err := nlp.warm(); err != nil {
		return nil, err
	}
	sets := &ipsets{req: req, nl: nlp, ttl: m.ttl, max: uint32(m.cfg.MaxHoles), log: m.log}
	own := newOwner()
	nft := &nftPart{cfg: m.cfg, ns: m.ns, log: m.log, req: req}
	m.iptb = newIPTBackend(own, m.ns, m.log, m.jan.wake)
	flow := &flowPart{group: m.cfg.FlowLogGroup, ttl: m.cfg.TTL, ns: m.ns, log: m.log, tab: m.tab, req: req,
		flows: newFlowTable(m.cfg.FlowTable), cnt: m.cnt}
	m.sets, m.flow, m.clean = sets, flow, newCtCleaner(m.ns, m.cnt)
	m.nats = map[natKind]natBackend{natNFT: &nftBackend{nft: nft, ttl: m.cfg.TTL}, natIPT: m.iptb}
	m.st = &structure{cfg: m.cfg, fams: m.fams, ns: m.ns, log: m.log, own: own, sets: sets, nft: nft,
		iptb: m.iptb, tab: m.tab, flow: flow, opts: o, ipt: map[Family]*iptables.IPTables{},
		base: newBaseChains(m.ns.ns, m.log)}
	m.close, m.trim = []func(){sets.close}, sets.trim
	return m, nil
}

// compose is the part of New that needs no kernel: the checked
// configuration and the hole table (root-free tests add fake parts).
func compose(cfg Config, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := validate(&cfg); err != nil {
		return nil, fmt.Errorf("natrules config: %w", err)
	}
	m := &Manager{
		cfg: cfg, log: log.With("component", "natrules"), ns: nsRunner{ns: netns.None()},
		ttl: uint32((cfg.TTL + time.Second - 1) / time.Second),
		tab: holetab.New(holetab.Config{MaxHoles: cfg.MaxHoles, TTL: cfg.TTL, RecentKeep: recentKeep}),
		cnt: &counters{},
		jan: janitor{kick: make(chan struct{}, 1)},
	}
	if cfg.IPv4 {
		m.fams = append(m.fams, IPv4)
	}
	if cfg.IPv6 {
		m.fams = append(m.fams, IPv6)
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
	if lp := c.LocalPorts; lp.Lo != 0 || lp.Hi != 0 {
		switch {
		case lp.Lo == 0 || lp.Hi < lp.Lo:
			errs = append(errs, fmt.Errorf("LocalPorts %d-%d: want 1 <= Lo <= Hi", lp.Lo, lp.Hi))
		case c.ListenPort >= lp.Lo && c.ListenPort <= lp.Hi:
			errs = append(errs, fmt.Errorf("ListenPort %d inside LocalPorts %d-%d", c.ListenPort, lp.Lo, lp.Hi))
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) enabled(f Family) bool { return slices.Contains(m.fams, f) }

// backend returns the NAT backend Setup chose (nil before).
func (m *Manager) backend() natBackend {
	if b := m.nat.Load(); b != nil {
		return b.natBackend
	}
	return nil
}

// Setup sweeps whatever an earlier instance left (chains, rules, sets) and
// installs the static structure for the enabled families. Running it twice
// gives the same ruleset (and forgets the holes of the first run).
func (m *Manager) Setup(ctx context.Context) error {
	start := time.Now()
	m.beginStructure()
	kind, err := m.st.setup(ctx)
	if err != nil {
		return err
	}
	m.structureUp(kind)
	m.log.Info("static structure installed", "families", m.fams, "nat", kind, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// beginStructure forgets every hole and marks the manager not ready, before
// Setup or Adopt makes the static structure its own.
func (m *Manager) beginStructure() {
	m.clean.start()
	m.ready.Store(false)
	m.setUp.Store(false)
	m.tab.Reset()
	if m.iptb != nil {
		m.iptb.reset()
	}
}

// structureUp takes the NAT backend of kind and serves: ready, janitor on.
func (m *Manager) structureUp(kind natKind) {
	m.nat.Store(&natBox{m.nats[kind]})
	m.ready.Store(true)
	m.setUp.Store(true)
	m.jan.start(m.round)
}

// Teardown removes everything the manager owns (chains, jumps, sets, and
// the rules of any earlier instance); foreign rules are left untouched.
func (m *Manager) Teardown(ctx context.Context) error {
	m.jan.stop()
	m.ready.Store(false)
	m.setUp.Store(false)
	err := m.st.teardown(ctx)
	m.tab.Reset()
	if m.iptb != nil {
		m.iptb.reset()
	}
	m.flow.stop()
	if err != nil {
		return fmt.Errorf("natrules teardown: %w", err)
	}
	m.log.Info("static structure removed")
	return nil
}

// Close stops the manager's goroutines (janitor, conntrack worker, flow
// log, the owner of the static structure) and closes its sockets. It
// changes nothing in the kernel (Teardown does); the manager is unusable
// afterwards. Closing twice is a no-op.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		m.setUp.Store(false)
		m.jan.stop()
		m.clean.close()
		m.flow.stop()
		m.st.close()
		for _, c := range m.close {
			c()
		}
	})
	return nil
}

// Run watches the canary until ctx is done: every ~1.5 s it verifies the
// static structure and the per-hole rules with one iptables-save per table
// and family (or, with iptables-nft, first asks whether the ruleset
// generation moved at all), and re-installs whatever drifted (an external
// iptables -F, a firewall reload), re-adding the per-hole rules of live
// holes.
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
		if m.st.unchanged(lastFull) {
			continue
		}
		lastFull = time.Now()
		ready, repaired, err := m.st.verify(ctx, func() { m.ready.Store(false) })
		if errors.Is(err, errNotSetUp) || errors.Is(err, errClosed) {
			continue
		}
		if repaired {
			m.log.Info("drift repaired", "reinstalls", m.reinstalls.Add(1))
		}
		m.ready.Store(ready)
		if err != nil && ctx.Err() == nil {
			m.log.Error("canary check failed", "err", err)
		}
	}
}

// Ready reports whether the static structure was verified in place (by
// Setup or the last canary check).
func (m *Manager) Ready() bool { return m.ready.Load() }

// Stats returns the counters.
func (m *Manager) Stats() Stats {
	c := m.tab.Counts()
	st := Stats{
		Opened: m.opened.Load(), Revoked: c.Revoked, Failed: m.failed.Load(),
		Expired: c.Expired, Reinstalls: m.reinstalls.Load(), Used: c.Used,
		Conntrack: m.cnt.conntrack.Load(), CtWalks: m.cnt.ctWalks.Load(), Live: c.Live,
	}
	if m.iptb != nil {
		st.GCRuns, st.GCRules, st.DeadRules = m.iptb.gcRuns.Load(), m.iptb.gcRules.Load(), m.iptb.deadRules()
	}
	m.flow.stats(&st)
	return st
}
