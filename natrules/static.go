package natrules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-iptables/iptables"

	"github.com/ftpalg/ftpalg/natrules/internal/holetab"
)

// structure is the static part of the firewall: the iptables chains and
// jumps, the ipsets, the ftpalg nftables tables, their snapshot and the
// canary's check and repair. Everything it does runs in the owner's
// goroutine (serialised, no lock held across the execs).
type structure struct {
	cfg  Config
	fams []Family
	ns   nsRunner
	log  *slog.Logger
	own  *owner
	sets *ipsets
	nft  *nftPart
	iptb *iptBackend
	tab  *holetab.Table
	flow *flowPart
	opts options
	base *baseChains // the base chains iptables-nft created for our jumps

	// owner goroutine only:
	ipt      map[Family]*iptables.IPTables
	kind     natKind
	expected map[Family]map[string][]string // static lines per family and table, captured after install
	held     []holetab.Info                 // the live holes a repair re-adds, held (verify)
}

// setup sweeps whatever an earlier instance left and installs the static
// structure; it returns the NAT backend it could set up.
func (s *structure) setup(ctx context.Context) (natKind, error) {
	var kind natKind
	err := s.own.do(func() error {
		if err := s.initIPT(); err != nil {
			return fmt.Errorf("natrules setup: %w", err)
		}
		s.base.record(s.fams)
		if err := s.sets.req.warm(); err != nil {
			return fmt.Errorf("natrules setup: netfilter request socket: %w", err)
		}
		for _, f := range []Family{IPv4, IPv6} {
			if s.ipt[f] == nil {
				continue
			}
			if err := s.sweepRules(ctx, f); err != nil {
				return fmt.Errorf("natrules setup: sweep %s: %w", f, err)
			}
		}
		if err := s.sets.sweep(ctx); err != nil {
			return fmt.Errorf("natrules setup: sweep sets: %w", err)
		}
		s.expected = nil
		s.kind = s.setupNFT()
		kind = s.kind
		// The flow log first: the NFLOG rule goes in only if ftpalg holds
		// the group (another holder would be sent every data connection's SYN).
		s.flow.start()
		err := s.installStatic(ctx)
		if err != nil && s.flow.nflog() {
			// A kernel without the NFLOG target (nft_log, xt_NFLOG) refuses
			// the rule: run without the flow log rather than not at all.
			s.log.Warn("NFLOG rule refused: flow log off, transfer byte counts and session cleanup will walk the conntrack table", "err", err)
			s.flow.stop()
			for _, f := range s.fams {
				if s.ipt[f] != nil {
					if err := s.sweepRules(ctx, f); err != nil {
						return fmt.Errorf("natrules setup: sweep %s: %w", f, err)
					}
				}
			}
			s.expected = nil
			err = s.installStatic(ctx)
		}
		if err != nil {
			return err
		}
		s.nft.startGenProbe(s.kind == natNFT, s.fams[0])
		return nil
	})
	return kind, err
}

// installStatic installs and records the static structure of every
// enabled family.
func (s *structure) installStatic(ctx context.Context) error {
	for _, f := range s.fams {
		if err := s.ensureSets(f, true); err != nil {
			return fmt.Errorf("natrules setup %s: %w", f, err)
		}
		if err := s.ensureStatic(ctx, f); err != nil {
			return fmt.Errorf("natrules setup %s: %w", f, err)
		}
	}
	if err := s.snapshot(ctx); err != nil {
		return fmt.Errorf("natrules setup: %w", err)
	}
	return nil
}

// ruleCfg is the configuration the static rules are built from: without
// the flow log's group unless the flow log runs.
func (s *structure) ruleCfg() Config {
	c := s.cfg
	if !s.flow.nflog() {
		c.FlowLogGroup = 0
	}
	return c
}

// setupNFT sweeps the ftpalg nftables tables and creates them for the
// enabled families. If that fails (no nf_tables in the kernel, no
// concatenated NAT maps), it logs a warning, removes what it created, and
// returns the iptables fallback.
func (s *structure) setupNFT() natKind {
	err := s.nft.nftSweep()
	if err == nil && s.opts.noNFT {
		err = errors.New("disabled")
	}
	if err == nil {
		for _, f := range s.fams {
			if err = s.nft.nftInstall(f, false, nil); err != nil {
				break
			}
		}
	}
	if err != nil {
		s.log.Warn("nftables NAT maps unavailable: NAT holes fall back to one iptables-restore each", "err", err)
		if err := s.nft.nftSweep(); err != nil {
			s.log.Debug("nftables sweep", "err", err)
		}
		return natIPT
	}
	return natNFT
}

func (s *structure) initIPT() error {
	for _, f := range []Family{IPv4, IPv6} {
		if s.ipt[f] != nil {
			continue
		}
		proto := iptables.ProtocolIPv4
		if f == IPv6 {
			proto = iptables.ProtocolIPv6
		}
		ipt, err := iptables.NewWithProtocol(proto)
		if err != nil {
			if slices.Contains(s.fams, f) {
				return fmt.Errorf("%s: %w", f, err)
			}
			continue // only needed to sweep
		}
		s.ipt[f] = ipt
	}
	return nil
}

// sweepRules deletes every rule of ours from the built-in chains, then
// flushes and deletes every FTPALG- chain, in filter and nat.
func (s *structure) sweepRules(ctx context.Context, f Family) error {
	ipt := s.ipt[f]
	for _, table := range []string{tFilter, tNAT} {
		st, err := s.ns.save(ctx, f, table)
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
			if err := s.ns.do(func() error { return ipt.DeleteIfExists(table, r.chain, args...) }); err != nil {
				return fmt.Errorf("delete %s: %w", r.line(), err)
			}
			s.log.Debug("swept rule", "family", f, "table", table, "rule", r.line())
		}
		var own []string
		for c := range st.chains {
			if strings.HasPrefix(c, Prefix) {
				own = append(own, c)
			}
		}
		slices.Sort(own)
		for _, c := range own {
			if err := s.ns.do(func() error { return ipt.ClearChain(table, c) }); err != nil {
				return fmt.Errorf("flush %s/%s: %w", table, c, err)
			}
		}
		for _, c := range own {
			if err := s.ns.do(func() error { return ipt.DeleteChain(table, c) }); err != nil {
				return fmt.Errorf("delete chain %s/%s: %w", table, c, err)
			}
			s.log.Debug("swept chain", "family", f, "table", table, "chain", c)
		}
	}
	return nil
}

// ensureSets creates the family's sets if missing. When a set had to be
// created outside the initial setup, the live holes' entries are re-added
// with their remaining lifetime.
func (s *structure) ensureSets(f Family, initial bool) error {
	names := []string{fwdSet(f)}
	if s.kind == natIPT {
		names = append(names, natSet(f))
	}
	for _, name := range names {
		created, err := s.sets.create(name, f)
		if err != nil {
			return err
		}
		if !created || initial {
			continue
		}
		s.log.Warn("set was missing, recreated", "set", name)
		now := time.Now()
		for _, hi := range s.held {
			if hi.KnownUsed {
				continue // consumed: re-adding would re-arm it
			}
			for _, e := range hi.Parts.Entries {
				if e.Set != name || !now.Before(hi.Expires) {
					continue
				}
				ttl := uint32(hi.Expires.Sub(now)/time.Second) + 1
				if err := s.sets.add(e, ttl); err != nil {
					s.log.Error("re-add set entry", "entry", e, "err", err)
				}
			}
		}
	}
	return nil
}

// teardown removes everything the manager owns (chains, jumps, sets,
// tables, and the rules of any earlier instance).
func (s *structure) teardown(ctx context.Context) error {
	return s.own.do(func() error {
		s.expected = nil
		if err := s.initIPT(); err != nil {
			return err
		}
		var errs []error
		for _, f := range []Family{IPv4, IPv6} {
			if s.ipt[f] == nil {
				continue
			}
			if err := s.sweepRules(ctx, f); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", f, err))
			}
		}
		if err := s.nft.nftSweep(); err != nil && s.kind == natNFT {
			errs = append(errs, err)
		}
		s.nft.close()
		if err := s.sets.sweep(ctx); err != nil {
			errs = append(errs, err)
		}
		if len(errs) == 0 { // else the record stays for -cleanup
			if err := s.base.remove(); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
}

// unchanged: see nftPart.unchanged.
func (s *structure) unchanged(lastFull time.Time) bool {
	var same bool
	s.own.do(func() error { same = s.nft.unchanged(lastFull); return nil })
	return same
}

// close releases the nftables socket and the probe, and stops the owner.
func (s *structure) close() {
	s.own.do(func() error { s.nft.close(); return nil })
	s.own.close()
}
