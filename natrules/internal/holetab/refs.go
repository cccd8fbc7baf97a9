package holetab

import (
	"slices"
	"time"

	"github.com/ftpalg/ftpalg/natrules/hole"
)

// unrefEntryLocked drops a reference; it reports whether it was the last.
func (t *Table) unrefEntryLocked(e hole.SetEntry) bool {
	t.fwdRef[e]--
	if t.fwdRef[e] > 0 {
		return false
	}
	delete(t.fwdRef, e)
	return true
}

// unrefElemsLocked drops references and returns the elements no hole
// holds any more.
func (t *Table) unrefElemsLocked(es []hole.Elem) []hole.Elem {
	var last []hole.Elem
	for _, e := range es {
		r := t.elemRef[e.ID()]
		if r == nil {
			continue
		}
		if r.n--; r.n <= 0 {
			delete(t.elemRef, e.ID())
			last = append(last, e)
		}
	}
	return last
}

// unindexLocked takes st out of the flow log's index; recent says
// whether the log may still see its SYN (the hole was armed).
func (t *Table) unindexLocked(st *state, recent bool) {
	k := hole.KeyOf(st.h)
	if len(st.p.Entries) == 0 {
		return
	}
	fe := st.p.Entries[0]
	ks := slices.DeleteFunc(t.index[fe], func(x *state) bool { return x == st })
	if len(ks) == 0 {
		delete(t.index, fe)
	} else {
		t.index[fe] = ks
	}
	if recent {
		t.recent[fe] = recentHole{k: k, at: time.Now()}
	}
}
