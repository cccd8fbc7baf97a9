package natrules

import (
	"context"
	"log/slog"
	"time"

	"github.com/vishvananda/netns"

	"github.com/ftpalg/ftpalg/natrules/internal/holetab"
)

// Hooks for the tests of this package: what production code has no use
// for.

// withRefusedNFLOG makes the NFLOG rule fail as on a kernel without the
// target.
func withRefusedNFLOG() Option { return func(o *options) { o.failNFLOG = true } }

// newManager is New in a network namespace.
func newManager(cfg Config, log *slog.Logger, ns netns.NsHandle, opts ...Option) (*Manager, error) {
	return New(cfg, log, append([]Option{InNetns(ns)}, opts...)...)
}

func (m *Manager) stopJanitor()  { m.jan.stop() }
func (m *Manager) startJanitor() { m.jan.start(m.round) }

func (m *Manager) structure() *structure { return m.st.(*structure) }
func (m *Manager) flowPart() *flowPart   { return m.flow.(*flowPart) }

// nb is the NAT backend Setup chose.
func (m *Manager) nb() natKind { return m.backend().kind() }

// unchanged is the canary's generation probe.
func (m *Manager) unchanged(lastFull time.Time) bool { return m.st.unchanged(lastFull) }

// genArmed says whether the generation probe is armed.
func (m *Manager) genArmed() bool {
	var ok bool
	s := m.structure()
	s.own.do(func() error { ok = s.nft.gen != nil; return nil })
	return ok
}

func (m *Manager) drainFlowLog() { m.flow.drain() }
func (m *Manager) flogLost()     { m.flowPart().lost() }

// flowsOf is the flows recorded for h.
func (m *Manager) flowsOf(h Hole) []flowRec {
	h, err := normalize(h)
	if err != nil {
		return nil
	}
	m.flow.drain()
	recs, _, _, _ := m.flowPart().flows.get(keyOf(h))
	return recs
}

func (m *Manager) addEntry(e setEntry, ttl uint32) error { return m.sets.add(e, ttl) }

// setMembers lists a set (nil if it cannot).
func (m *Manager) setMembers(set string) map[setEntry]bool {
	in, _ := m.sets.members(set)
	return in
}

// openBatch installs many holes with one iptables-restore per family and
// a thousand NAT elements per transaction (to pre-populate benchmarks).
// Same semantics as calling Open on each.
func (m *Manager) openBatch(ctx context.Context, hs []Hole) error {
	nat, s := m.backend(), m.structure()
	byFam := map[Family][]Rule{}
	elems := map[Family][]timedElem{}
	var ops []*holetab.Op
	for _, h := range hs {
		h, err := normalize(h)
		if err != nil {
			return err
		}
		f := FamilyOf(h.From)
		byFam[f] = append(byFam[f], holeRules(h, nat.kind())...)
		op, err := m.tab.Open(ctx, h, nat.parts(h), time.Now())
		if err != nil {
			return err
		}
		ops = append(ops, op)
		for _, e := range op.Elems {
			elems[f] = append(elems[f], timedElem{e, m.cfg.TTL})
		}
	}
	err := s.own.do(func() error {
		for f, rs := range byFam {
			if len(rs) > 0 {
				if err := m.ns.restore(ctx, f, restoreScript("-A", rs)); err != nil {
					return err
				}
			}
		}
		for f, es := range elems {
			if err := s.nft.nftAddMany(f, es); err != nil {
				return err
			}
		}
		return nil
	})
	for _, op := range ops {
		if err == nil {
			err = m.addEntries(op.Entries)
		}
		m.tab.Commit(op, false, time.Now())
		m.opened.Add(1)
	}
	return err
}
