package natrules

import "time"

// fullCheckInterval bounds how long the canary trusts the ruleset
// generation alone: a full comparison (iptables-save of every table, the
// nftables table) runs at least this often.
const fullCheckInterval = 30 * time.Second

// The canary's full comparison execs iptables-save for each family and
// table: on a 2-core VM about 27 ms of CPU per round, 1.8 % of a core at
// one round per canaryInterval, in bursts that stall whatever else runs.
// When iptables is the nf_tables flavour, every change to the ruleset (an
// iptables or nft command, a firewall reload, a flush) commits an nf_tables
// transaction and bumps the ruleset generation, so one GETGEN request says
// whether anything changed. ftpalg's own map updates bump it too; it counts
// its commits (nftFlush, nftElems) and only a difference
// between the two triggers the full check. A false alarm costs one full
// check, never a missed one: the comparison stays the judge.

// genProbe is the state of the generation probe; nil when unusable.
// ext is the generation less ftpalg's own commits at the last probe that
// no commit of ftpalg's overlapped: it moves only with foreign changes.
type genProbe struct {
	conn *ctConn
	ext  uint32
	have bool // ext is known
}

// startGenProbe arms the probe when it can be trusted: the NAT maps are
// nftables ones and iptables itself writes nf_tables (its canary chain is
// an nftables chain; iptables-legacy changes bump no generation). Owner
// goroutine, after the static structure is installed.
func (m *nftPart) startGenProbe(nftMaps bool, fam Family) {
	m.stopGenProbe()
	if !nftMaps || !m.iptablesOnNFT(fam) {
		m.log.Info("canary compares the full ruleset every round (iptables-legacy or no nftables maps)", "every", canaryInterval)
		return
	}
	var c *ctConn
	err := m.ns.do(func() (err error) { c, err = dialCt(); return err })
	if err != nil {
		m.log.Warn("ruleset generation unavailable: the canary compares the full ruleset every round", "err", err)
		return
	}
	m.gen = &genProbe{conn: c}
	m.probe() // the baseline
}

func (m *nftPart) stopGenProbe() {
	if m.gen != nil {
		m.gen.conn.close()
		m.gen = nil
	}
}

// iptablesOnNFT says whether iptables' tables are nf_tables ones:
// the filter canary chain of the family is listed by nftables.
func (m *nftPart) iptablesOnNFT(fam Family) bool {
	c, err := m.nftConn()
	if err != nil {
		return false
	}
	chains, err := c.ListChainsOfTableFamily(nftFamily(fam))
	if err != nil {
		m.nftClose()
		return false
	}
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == tFilter && ch.Name == chCanary {
			return true
		}
	}
	return false
}

// probe reads the generation and says whether only ftpalg's own commits
// moved it since the last probe. A probe that a commit of ftpalg's
// overlaps cannot tell (the commit may or may not be in the generation
// read): it is retried, and after three such it says no (a full check).
func (m *nftPart) probe() bool {
	for range 3 {
		f1, s1, own := m.finished.Load(), m.started.Load(), m.own.Load()
		g, err := m.gen.conn.generation()
		if err != nil {
			m.log.Debug("canary: generation probe failed, full check", "err", err)
			return false
		}
		f2, s2 := m.finished.Load(), m.started.Load()
		if f1 != s1 || s2 != s1 || f2 != f1 {
			continue // a commit of ours ran meanwhile
		}
		ext := g - uint32(own)
		same := m.gen.have && ext == m.gen.ext
		m.gen.ext, m.gen.have = ext, true
		return same
	}
	return false
}

// unchanged says whether the canary may skip this round's full check:
// the probe is armed, the last full check is recent, and the generation
// moved by exactly ftpalg's own commits since the last probe. Owner
// goroutine.
func (m *nftPart) unchanged(lastFull time.Time) bool {
	if m.gen == nil {
		return false
	}
	return m.probe() && time.Since(lastFull) < fullCheckInterval
}
