package holetab

import (
	"net/netip"
	"time"

	"github.com/ftpalg/ftpalg/natrules/hole"
)

// Live reports whether a hole with key k is in the table.
func (t *Table) Live(k hole.Key) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.holes[k]
	return ok
}

// Holes returns the holes in the table, except those being installed,
// revoked or expired.
func (t *Table) Holes() []Info {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Info, 0, len(t.holes))
	for _, st := range t.holes {
		if st.op != nil && st.op.Kind != Rearm {
			continue // not armed yet, or on its way out
		}
		out = append(out, Info{Hole: st.h, Parts: st.p, Expires: st.expires, KnownUsed: st.knownUsed()})
	}
	return out
}

// MarkUsed records that the kernel consumed h (found by asking it).
func (t *Table) MarkUsed(h hole.Hole) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if st, ok := t.holes[hole.KeyOf(h)]; ok && st.h == h {
		st.used = true
	}
}

// Counts returns the counters.
func (t *Table) Counts() Counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.counts
	for _, st := range t.holes {
		if st.op == nil || st.op.Kind == Rearm {
			c.Live++
		}
	}
	return c
}

// Seen is the flow log's report of a first SYN that consumed filter entry
// e: the holes behind it are marked and their keys returned; without one,
// the hole forgotten last on e (within RecentKeep), or the key the entry
// names.
func (t *Table) Seen(e hole.SetEntry, now time.Time) []hole.Key {
	t.mu.Lock()
	defer t.mu.Unlock()
	var keys []hole.Key
	for _, st := range t.index[e] {
		st.consumed++
		keys = append(keys, hole.KeyOf(st.h))
	}
	if len(keys) > 0 {
		return keys
	}
	if r, ok := t.recent[e]; ok && now.Sub(r.at) < t.cfg.RecentKeep {
		return []hole.Key{r.k}
	}
	return []hole.Key{{From: e.Src, To: netip.AddrPortFrom(e.Dst, e.Port)}}
}

// Between returns the keys of the holes (live, or forgotten within
// RecentKeep) whose filter entry in set runs from src to dst.
func (t *Table) Between(set string, src, dst netip.Addr, now time.Time) []hole.Key {
	t.mu.Lock()
	defer t.mu.Unlock()
	match := func(e hole.SetEntry) bool { return e.Set == set && e.Src == src && e.Dst == dst }
	var keys []hole.Key
	for e, sts := range t.index {
		if match(e) {
			for _, st := range sts {
				keys = append(keys, hole.KeyOf(st.h))
			}
		}
	}
	for e, r := range t.recent {
		if match(e) && now.Sub(r.at) < t.cfg.RecentKeep {
			keys = append(keys, r.k)
		}
	}
	return keys
}

// PruneRecent forgets the holes forgotten more than RecentKeep ago.
func (t *Table) PruneRecent(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for e, r := range t.recent {
		if now.Sub(r.at) > t.cfg.RecentKeep {
			delete(t.recent, e)
		}
	}
}
