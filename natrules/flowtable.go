package natrules

import (
	"slices"
	"sync"
	"time"
)

// flowRec is one data connection seen through a hole: the source port of
// its first SYN (the rest of the tuple is the hole's).
type flowRec struct {
	sport uint16
	at    time.Time
}

// flowTable remembers, per hole, when it was last armed and the flows seen
// through it.
type flowTable struct {
	mu    sync.Mutex
	holes map[holeKey]*flowEntry
	n     int // entries plus flows, bounded by max
	max   int
}

type flowEntry struct {
	armed time.Time // zero: flows seen, arming not recorded
	recs  []flowRec
	// unsure: when a SYN the log could not read may have used the hole
	// (zero: never); its flows are then not all known.
	unsure time.Time
}

func newFlowTable(max int) *flowTable {
	return &flowTable{holes: map[holeKey]*flowEntry{}, max: max}
}

// entryLocked returns k's entry, creating it if there is room.
func (t *flowTable) entryLocked(k holeKey) *flowEntry {
	if e := t.holes[k]; e != nil {
		return e
	}
	if t.n >= t.max {
		return nil
	}
	e := &flowEntry{}
	t.holes[k] = e
	t.n++
	return e
}

// arm records that k was armed at now; false when the table is full.
func (t *flowTable) arm(k holeKey, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entryLocked(k)
	if e == nil {
		return false
	}
	e.armed = now
	return true
}

// add records a flow; it reports false when the table is full (the flow
// is then unknown, like a lost message).
func (t *flowTable) add(k holeKey, sport uint16, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entryLocked(k)
	if e == nil {
		return false
	}
	if len(e.recs) >= flowsPerEntry {
		copy(e.recs, e.recs[1:])
		e.recs = e.recs[:len(e.recs)-1]
		t.n--
	}
	if t.n >= t.max {
		return false
	}
	e.recs = append(e.recs, flowRec{sport: sport, at: now})
	t.n++
	return true
}

// taint records that a SYN the log could not read may have used k; false
// if k has no entry. It adds none: entries come and go with the holes, so
// unreadable SYNs cannot fill the table.
func (t *flowTable) taint(k holeKey, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.holes[k]
	if e == nil {
		return false
	}
	e.unsure = now
	return true
}

// get returns a copy of the flows of k, oldest first, when k was last
// armed (zero if unknown), whether an unreadable SYN may have used it, and
// whether k has an entry at all.
func (t *flowTable) get(k holeKey) (recs []flowRec, armed time.Time, unsure, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.holes[k]
	if e == nil {
		return nil, time.Time{}, false, false
	}
	return append([]flowRec(nil), e.recs...), e.armed, !e.unsure.IsZero(), true
}

// dropIdle forgets k if no flow came through it: the manager forgot the
// hole, so none can come any more.
func (t *flowTable) dropIdle(k holeKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.holes[k]; e != nil && len(e.recs) == 0 && e.unsure.IsZero() {
		t.n--
		delete(t.holes, k)
	}
}

// drop forgets k.
func (t *flowTable) drop(k holeKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.holes[k]; e != nil {
		t.n -= 1 + len(e.recs)
		delete(t.holes, k)
	}
}

// old returns the flows seen before cutoff, and drops the entries without
// flows armed (and made unsure, if they were) before armCutoff.
func (t *flowTable) old(cutoff, armCutoff time.Time) map[holeKey][]flowRec {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[holeKey][]flowRec{}
	for k, e := range t.holes {
		if len(e.recs) == 0 && e.armed.Before(armCutoff) && e.unsure.Before(armCutoff) {
			t.n--
			delete(t.holes, k)
			continue
		}
		for _, f := range e.recs {
			if f.at.Before(cutoff) {
				out[k] = append(out[k], f)
			}
		}
	}
	return out
}

// forget removes the given flows of k (the entry stays while it is armed
// recently enough to matter).
func (t *flowTable) forget(k holeKey, gone []flowRec) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.holes[k]
	if e == nil {
		return
	}
	kept := e.recs[:0]
	for _, f := range e.recs {
		if !slices.Contains(gone, f) {
			kept = append(kept, f)
		}
	}
	t.n -= len(e.recs) - len(kept)
	e.recs = kept
}

func (t *flowTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

func (t *flowTable) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.holes = map[holeKey]*flowEntry{}
	t.n = 0
}
