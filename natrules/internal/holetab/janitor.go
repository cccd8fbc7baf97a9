package holetab

import (
	"slices"
	"time"
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
		if t.fwdRef[e] > 0 || t.delEntries[e] != nil || slices.Contains(u.Entries, e) {
			continue // re-armed for a live hole: it is that hole's now
		}
		u.Entries = append(u.Entries, e)
	}
	t.lateDel = t.lateDel[:0]
	t.markLocked(u)
	return u
}
