package natrules

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ensureStatic (re)installs the static chains and jumps of a family that
// are not as expected. With no expected snapshot (initial setup) every own
// chain is rebuilt. If FTPALG-DNAT or FTPALG-SNAT is rebuilt, the per-hole
// rules of live holes are re-added in one iptables-restore. Owner goroutine.
func (s *structure) ensureStatic(ctx context.Context, f Family) error {
	if s.opts.failNFLOG && s.ruleCfg().FlowLogGroup != 0 {
		return errors.New("iptables: NFLOG target not found (test)")
	}
	ipt := s.ipt[f]
	rules := staticRules(s.ruleCfg(), f, s.kind)
	exp := s.expected[f]
	saved := map[string]map[string]bool{}
	holeLines := map[string]int{}
	if exp != nil {
		for _, table := range []string{tFilter, tNAT} {
			st, err := s.ns.save(ctx, f, table)
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
		if exp == nil || !saved[table][":"+chain] {
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
	for _, c := range ownChains(s.cfg, s.kind) {
		if !intact(c.Table, c.Name) {
			rebuild[c] = true
		}
	}
	// Per-hole rules: if some vanished, rebuild both per-hole chains.
	if want := s.iptb.want(f); exp != nil && holeLines[tNAT] < want {
		s.log.Warn("per-hole rules missing", "family", f, "want", want, "have", holeLines[tNAT])
		rebuild[chainSpec{tNAT, chDNAT}] = true
	}
	if rebuild[chainSpec{tNAT, chDNAT}] || rebuild[chainSpec{tNAT, chSNAT}] {
		rebuild[chainSpec{tNAT, chDNAT}] = true
		rebuild[chainSpec{tNAT, chSNAT}] = true
	}
	for _, c := range ownChains(s.cfg, s.kind) {
		if !rebuild[c] {
			continue
		}
		if exp != nil {
			s.log.Warn("re-installing chain", "family", f, "table", c.Table, "chain", c.Name)
		}
		if err := s.ns.do(func() error { return ipt.ClearChain(c.Table, c.Name) }); err != nil {
			return fmt.Errorf("create chain %s/%s: %w", c.Table, c.Name, err)
		}
		for _, r := range rules {
			if r.Table != c.Table || r.Chain != c.Name {
				continue
			}
			if err := s.ns.do(func() error { return ipt.Append(r.Table, r.Chain, r.Args...) }); err != nil {
				return fmt.Errorf("install %s: %w", r, err)
			}
		}
	}
	if rebuild[chainSpec{tNAT, chDNAT}] {
		if rs := s.iptb.flushed(f); len(rs) > 0 {
			if err := s.ns.restore(ctx, f, restoreScript("-A", rs)); err != nil {
				return fmt.Errorf("re-add %d per-hole rules: %w", len(rs), err)
			}
			s.log.Info("re-added per-hole rules", "family", f, "rules", len(rs))
		}
	}
	for _, r := range rules {
		if !r.builtin() {
			continue
		}
		var ok bool
		err := s.ns.do(func() (err error) { ok, err = ipt.Exists(r.Table, r.Chain, r.Args...); return })
		if err != nil {
			return fmt.Errorf("check %s: %w", r, err)
		}
		if ok {
			continue
		}
		if exp != nil {
			s.log.Warn("re-installing jump", "family", f, "rule", r.String())
		}
		if err := s.ns.do(func() error { return ipt.Insert(r.Table, r.Chain, 1, r.Args...) }); err != nil {
			return fmt.Errorf("install %s: %w", r, err)
		}
	}
	return nil
}

// snapshot records the static structure as iptables-save prints it, and
// checks it is complete.
func (s *structure) snapshot(ctx context.Context) error {
	exp := map[Family]map[string][]string{}
	for _, f := range s.fams {
		exp[f] = map[string][]string{}
		want := map[string]int{}
		for _, r := range staticRules(s.ruleCfg(), f, s.kind) {
			want[r.Table]++
		}
		for _, table := range []string{tFilter, tNAT} {
			st, err := s.ns.save(ctx, f, table)
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
	s.expected = exp
	return nil
}

// check compares the live ruleset with the snapshot.
func (s *structure) check(ctx context.Context) (drift []string, err error) {
	for _, f := range s.fams {
		want := s.iptb.want(f)
		for _, table := range []string{tFilter, tNAT} {
			st, err := s.ns.save(ctx, f, table)
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
			for _, l := range s.expected[f][table] {
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

// checkAll is check plus, with the nftables backend, the ftpalg tables.
func (s *structure) checkAll(ctx context.Context) (drift []string, nftDrift map[Family]bool, err error) {
	drift, err = s.check(ctx)
	if err != nil || s.kind != natNFT {
		return drift, nil, err
	}
	nftDrift = map[Family]bool{}
	for _, f := range s.fams {
		d, err := s.nft.nftCheck(f)
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

// verify is one full canary round: it compares, and re-installs whatever
// drifted (calling drifted first). ready says whether the structure is in place at the end;
// repaired whether something was re-installed.
func (s *structure) verify(ctx context.Context, drifted func()) (ready, repaired bool, err error) {
	err = s.own.do(func() error {
		if s.expected == nil {
			ready = true // not set up (or torn down): nothing to judge
			return errNotSetUp
		}
		drift, nftDrift, err := s.checkAll(ctx)
		if err != nil {
			drifted()
			return err
		}
		if len(drift) == 0 {
			ready = true
			return nil
		}
		drifted()
		s.log.Warn("drift detected, re-installing", "drift", drift)
		// No revoke may end between the view of the live holes and
		// the re-adds of their objects (it would be undone), and no
		// element may be added while the table is replaced (it would
		// be lost). The iptables backend's installs need this goroutine.
		held, release, err := s.tab.Hold(ctx, s.kind == natNFT)
		defer release()
		if err != nil {
			return fmt.Errorf("re-install: %w", err)
		}
		s.held = held
		defer func() { s.held = nil }()
		start := time.Now()
		for _, f := range s.fams {
			if err := s.ensureSets(f, false); err != nil {
				return fmt.Errorf("re-install %s: %w", f, err)
			}
			if err := s.ensureStatic(ctx, f); err != nil {
				return fmt.Errorf("re-install %s: %w", f, err)
			}
			if nftDrift[f] {
				if err := s.nft.nftRepair(f, s.nftBook(f)); err != nil {
					return fmt.Errorf("re-install %s: %w", f, err)
				}
			}
		}
		release()
		repaired = true
		drift, _, err = s.checkAll(ctx)
		if err != nil {
			return err
		}
		if len(drift) > 0 {
			return fmt.Errorf("still drifted after re-install: %v", drift)
		}
		ready = true
		s.log.Info("re-installed", "took", time.Since(start).Round(time.Millisecond))
		return nil
	})
	return ready, repaired, err
}

var errNotSetUp = errors.New("not set up")

// nftBook lists the elements of family f's live holes, with their
// remaining lifetime, for a table that lost its maps. A hole the
// datapath consumed is not re-armed: its filter entry (ipsets survive an
// nft flush) tells.
func (s *structure) nftBook(f Family) []timedElem {
	now := time.Now()
	var book []timedElem
	for _, hi := range s.held {
		if FamilyOf(hi.Hole.From) != f || !now.Before(hi.Expires) || len(hi.Parts.Elems) == 0 {
			continue
		}
		if consumed(hi, s.sets, now) {
			s.tab.MarkUsed(hi.Hole)
			continue
		}
		for _, e := range hi.Parts.Elems {
			book = append(book, timedElem{e, hi.Expires.Sub(now)})
		}
	}
	return book
}
