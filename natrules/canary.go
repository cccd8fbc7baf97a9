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
// its commits (nftFlushLocked, nftElemsLocked) and only a difference
// between the two triggers the full check. A false alarm costs one full
// check, never a missed one: the comparison stays the judge.

// genProbe is the state of the generation probe; nil when unusable.
type genProbe struct {
	conn *ctConn
	last uint32 // the generation at the last probe
	own  uint32 // ftpalg's commits since then (under nftMu)
}

// nftGeneration asks the kernel for the nf_tables ruleset generation.
func (c *ctConn) nftGeneration() (uint32, error) { return c.generation() }

// startGenProbe arms the probe when it can be trusted: the NAT maps are
// nftables ones and iptables itself writes nf_tables (its canary chain is
// an nftables chain; iptables-legacy changes bump no generation). Caller
// holds iptMu, after the static structure is installed.
func (m *Manager) startGenProbe() {
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	m.stopGenProbeLocked()
	if m.nb != natNFT || !m.iptablesOnNFTLocked() {
		m.log.Info("canary compares the full ruleset every round (iptables-legacy or no nftables maps)", "every", canaryInterval)
		return
	}
	c, err := m.dialCtNS()
	var g uint32
	if err == nil {
		if g, err = c.nftGeneration(); err != nil {
			c.close()
		}
	}
	if err != nil {
		m.log.Warn("ruleset generation unavailable: the canary compares the full ruleset every round", "err", err)
		return
	}
	m.gen = &genProbe{conn: c, last: g}
}

func (m *Manager) stopGenProbeLocked() {
	if m.gen != nil {
		m.gen.conn.close()
		m.gen = nil
	}
}

// iptablesOnNFTLocked says whether iptables' tables are nf_tables ones:
// the filter canary chain of the first family is listed by nftables.
func (m *Manager) iptablesOnNFTLocked() bool {
	c, err := m.nftConnLocked()
	if err != nil {
		return false
	}
	chains, err := c.ListChainsOfTableFamily(nftFamily(m.fams[0]))
	if err != nil {
		m.nftCloseLocked()
		return false
	}
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == tFilter && ch.Name == chCanary {
			return true
		}
	}
	return false
}

// noteCommitLocked counts one of ftpalg's own nf_tables commits. Caller
// holds nftMu.
func (m *Manager) noteCommitLocked() {
	if m.gen != nil {
		m.gen.own++
	}
}

// unchanged says whether the canary may skip this round's full check:
// the probe is armed, the last full check is recent, and the generation
// moved by exactly ftpalg's own commits since the last probe.
func (m *Manager) unchanged(lastFull time.Time) bool {
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	if m.gen == nil {
		return false
	}
	g, err := m.gen.conn.nftGeneration()
	if err != nil {
		m.log.Debug("canary: generation probe failed, full check", "err", err)
		return false
	}
	same := g == m.gen.last+m.gen.own
	m.gen.last, m.gen.own = g, 0
	return same && time.Since(lastFull) < fullCheckInterval
}
