package holetab

import (
	"slices"
	"time"

	"github.com/ftpalg/ftpalg/natrules/hole"
)

// Expire takes out the holes whose TTL ran out (the kernel dropped their
// objects already: nothing to delete). Each leaves the table at Done.
func (t *Table) Expire(now time.Time) []*Undo {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*Undo
	for _, st := range t.holes {
		if st.op != nil || now.Before(st.expires) {
			continue
		}
		for _, e := range st.p.Entries {
			t.unrefEntryLocked(e)
		}
		t.unrefElemsLocked(st.p.Elems)
		t.unindexLocked(st, true)
		if st.knownUsed() {
			t.counts.Used++
		} else {
			t.counts.Expired++
		}
		t.busyLocked(st, &Op{Kind: expire, Hole: st.h})
		h := st.h
		out = append(out, &Undo{Forgot: &h, st: st})
	}
	return out
}

// Late returns the filter entries Finish left to the janitor that no live
// hole holds again, marked as being deleted (report with Done).
func (t *Table) Late() *Undo {
	t.mu.Lock()
	defer t.mu.Unlock()
	u := &Undo{}
	for _, e := range t.lateDel {
		if _, deleting := t.delEntries[e]; t.fwdRef[e] > 0 || deleting || slices.Contains(u.Entries, e) {
			continue // re-armed for a live hole: it is that hole's now
		}
		u.Entries = append(u.Entries, e)
	}
	t.lateDel = t.lateDel[:0]
	t.markLocked(u)
	return u
}

// Unsure says whether some hole's use is unknown and could be learnt from
// its filter entry (MarkAbsent): not known used, not busy, not too close
// to its TTL to tell use from expiry.
func (t *Table) Unsure(now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, st := range t.holes {
		if t.unsureLocked(st, now) {
			return true
		}
	}
	return false
}

func (t *Table) unsureLocked(st *state, now time.Time) bool {
	return st.op == nil && !st.knownUsed() && len(st.p.Entries) > 0 && now.Before(st.expires.Add(-time.Second))
}

// MarkAbsent marks used the holes whose filter entry was missing from a
// listing of the kernel's sets that began at listed (present answers for
// the sets listed; ok false: not listed). A hole armed since the listing
// began is left alone: the listing may predate its entry.
func (t *Table) MarkAbsent(listed time.Time, present func(hole.SetEntry) (in, ok bool)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, st := range t.holes {
		if !t.unsureLocked(st, listed) || st.expires.Add(-t.cfg.TTL).After(listed) {
			continue
		}
		if in, ok := present(st.p.Entries[0]); ok && !in {
			st.used = true
		}
	}
}
