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

	"github.com/ftpalg/ftpalg/natrules/internal/holetab"
)

// nftBackend: a hole's NAT is elements of the ftpalg nftables maps, added
// after its filter entry (the gate opens last) in one transaction.
type nftBackend struct {
	nft *nftPart
	ttl time.Duration
}

func (b *nftBackend) kind() natKind { return natNFT }

func (b *nftBackend) parts(h Hole) holetab.Parts {
	return holetab.Parts{Entries: holeEntries(h, natNFT), Elems: holeElems(h)}
}

func (b *nftBackend) prepare(context.Context, Hole) error { return nil }

func (b *nftBackend) arm(f Family, es []nftElem, refresh bool) error {
	if err := b.nft.elems(f, es, true, refresh, b.ttl); err != nil {
		return fmt.Errorf("nftables add: %w", err)
	}
	return nil
}

func (b *nftBackend) disarm(f Family, es []nftElem) error {
	if err := b.nft.elems(f, es, false, false, b.ttl); err != nil {
		return fmt.Errorf("nftables delete: %w", err)
	}
	return nil
}

func (b *nftBackend) drop(Hole) {}

func (b *nftBackend) deadRules() int { return 0 }

// iptBackend is the fallback without nf_tables: a hole's NAT is per-hole
// iptables rules in FTPALG-DNAT and FTPALG-SNAT, added by one
// iptables-restore (in the owner goroutine, like every exec) before the
// FTPALG-NAT gate entry. The rules of a forgotten hole are inert (its gate
// entry is gone) and deleted in batches by gc.
type iptBackend struct {
	own  *owner
	ns   nsRunner
	log  *slog.Logger
	kick func() // wakes the janitor for gc

	mu   sync.Mutex // guards live and dead; never held across an exec
	live map[holeKey][]Rule
	dead map[holeKey][]Rule

	gcRuns, gcRules atomic.Uint64
}

func newIPTBackend(own *owner, ns nsRunner, log *slog.Logger, kick func()) *iptBackend {
	return &iptBackend{own: own, ns: ns, log: log, kick: kick, live: map[holeKey][]Rule{}, dead: map[holeKey][]Rule{}}
}

func (b *iptBackend) kind() natKind { return natIPT }

func (b *iptBackend) parts(h Hole) holetab.Parts {
	return holetab.Parts{Entries: holeEntries(h, natIPT)}
}

// prepare installs h's rules, or takes back its inert ones still in place.
func (b *iptBackend) prepare(ctx context.Context, h Hole) error {
	rules := holeRules(h, natIPT)
	if len(rules) == 0 {
		return nil
	}
	k, f := keyOf(h), FamilyOf(h.From)
	return b.own.do(func() error {
		b.mu.Lock()
		d, dead := b.dead[k]
		if dead && slices.EqualFunc(d, rules, ruleEqual) {
			delete(b.dead, k)
			b.live[k] = rules
			b.mu.Unlock()
			return nil
		}
		b.mu.Unlock()
		if dead {
			// Another hole's inert rules on the same key sit earlier in
			// the chain, and the new gate entry would let them catch
			// this hole's SYN (DNAT to the old destination): they go
			// first.
			if err := b.dropKey(ctx, f, k, d); err != nil {
				return err
			}
		}
		if err := b.ns.restore(ctx, f, restoreScript("-A", rules)); err != nil {
			return err
		}
		b.mu.Lock()
		b.live[k] = rules
		b.mu.Unlock()
		return nil
	})
}

// dropKey deletes the dead rules d of key k now, rescanning the table if
// they are not all there. Owner goroutine.
func (b *iptBackend) dropKey(ctx context.Context, f Family, k holeKey, d []Rule) error {
	if err := b.ns.restore(ctx, f, restoreScript("-D", d)); err != nil {
		b.mu.Lock()
		live := map[string]bool{}
		for lk := range b.live {
			live[lk.String()] = true
		}
		b.mu.Unlock()
		if _, err := b.gcScan(ctx, f, live); err != nil {
			return fmt.Errorf("delete the inert rules of %s: %w", k, err)
		}
		// The rescan deleted every dead rule of the family.
		b.mu.Lock()
		for dk := range b.dead {
			if FamilyOf(dk.From) == f {
				delete(b.dead, dk)
			}
		}
		b.mu.Unlock()
		return nil
	}
	b.mu.Lock()
	delete(b.dead, k)
	b.mu.Unlock()
	return nil
}

func (b *iptBackend) arm(Family, []nftElem, bool) error { return nil }
func (b *iptBackend) disarm(Family, []nftElem) error    { return nil }

// drop queues the rules of a hole that left the table for gc.
func (b *iptBackend) drop(h Hole) {
	k := keyOf(h)
	b.mu.Lock()
	rs, ok := b.live[k]
	if ok {
		delete(b.live, k)
		b.dead[k] = rs
	}
	b.mu.Unlock()
	if ok {
		b.kick()
	}
}

func ruleEqual(a, b Rule) bool {
	return a.Table == b.Table && a.Chain == b.Chain && slices.Equal(a.Args, b.Args)
}

func (b *iptBackend) deadRules() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, rs := range b.dead {
		n += len(rs)
	}
	return n
}

// want is the number of per-hole rules of family f the nat table must
// hold: those of live holes and the dead ones not collected yet.
func (b *iptBackend) want(f Family) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, m := range []map[holeKey][]Rule{b.live, b.dead} {
		for k, rs := range m {
			if FamilyOf(k.From) == f {
				n += len(rs)
			}
		}
	}
	return n
}

// flushed notes that the per-hole chains of f were rebuilt: the dead
// rules went with the flush; it returns the live ones to add again.
func (b *iptBackend) flushed(f Family) []Rule {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.dead {
		if FamilyOf(k.From) == f {
			delete(b.dead, k)
		}
	}
	var rs []Rule
	for k, r := range b.live {
		if FamilyOf(k.From) == f {
			rs = append(rs, r...)
		}
	}
	return rs
}

func (b *iptBackend) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.live, b.dead = map[holeKey][]Rule{}, map[holeKey][]Rule{}
}

// gc deletes dead per-hole rules. Normally one exec per family with "-D"
// by specification; if that fails (rules flushed externally) it falls back
// to reading the table and deleting what is actually there, including
// orphans with unknown keys.
func (b *iptBackend) gc(ctx context.Context) error {
	return b.own.do(func() error {
		b.mu.Lock()
		if len(b.dead) == 0 {
			b.mu.Unlock()
			return nil
		}
		byFam := map[Family][]Rule{}
		keys := map[Family][]holeKey{}
		for k, rs := range b.dead {
			f := FamilyOf(k.From)
			byFam[f] = append(byFam[f], rs...)
			keys[f] = append(keys[f], k)
		}
		live := map[string]bool{}
		for k := range b.live {
			live[k.String()] = true
		}
		b.mu.Unlock()
		var errs []error
		for f, rs := range byFam {
			n := len(rs)
			err := b.ns.restore(ctx, f, restoreScript("-D", rs))
			if err != nil {
				b.log.Warn("per-hole GC by spec failed, rescanning", "family", f, "err", err)
				n, err = b.gcScan(ctx, f, live)
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			b.gcRuns.Add(1)
			b.gcRules.Add(uint64(n))
			b.mu.Lock()
			for _, k := range keys[f] {
				delete(b.dead, k)
			}
			b.mu.Unlock()
		}
		return errors.Join(errs...)
	})
}

func (b *iptBackend) gcScan(ctx context.Context, f Family, live map[string]bool) (int, error) {
	st, err := b.ns.save(ctx, f, tNAT)
	if err != nil {
		return 0, err
	}
	var sb strings.Builder
	n := 0
	sb.WriteString("*nat\n")
	for _, r := range st.rules {
		if k := r.holeKeyString(); k != "" && !live[k] {
			sb.WriteString("-D " + r.chain + " " + r.spec + "\n")
			n++
		}
	}
	sb.WriteString("COMMIT\n")
	if n == 0 {
		return 0, nil
	}
	return n, b.ns.restore(ctx, f, []byte(sb.String()))
}
