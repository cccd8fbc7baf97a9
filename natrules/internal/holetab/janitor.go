package holetab

import (
	"slices"
	"time"

	"github.com/ftpalg/ftpalg/natrules/hole"
)

// Expire forgets the holes whose TTL ran out (the kernel dropped their
// objects already: nothing to delete) and returns them.
func (t *Table) Expire(now time.Time) []hole.Hole {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []hole.Hole
	for _, st := range t.holes {
		if st.op != nil || now.Before(st.expires) {
			continue
		}
		for _, e := range st.p.Entries {
			t.unrefEntryLocked(e)
		}
		t.unrefElemsLocked(st.p.Elems)
		t.removeLocked(st, true)
		if st.knownUsed() {
			t.counts.Used++
		} else {
			t.counts.Expired++
		}
		out = append(out, st.h)
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
