// Package holetab is the pinhole manager's bookkeeping: the live holes by
// key, the reference counts of the kernel objects they share (ipset
// members, nftables map elements), one-shot arming, expiry and the limits.
// It does no I/O: its methods return plans (what to add to or delete from
// the kernel), the caller carries them out with no lock held and reports
// back (Commit, Abort, Done). While a plan runs, the objects it changes
// are busy: an operation that needs one waits on a channel, never on a
// lock held across the kernel call.
package holetab

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ftpalg/ftpalg/natrules/hole"
)

// Parts are the kernel objects of one hole.
type Parts struct {
	Entries []hole.SetEntry // ipset members in add order; the filter entry first
	Elems   []hole.Elem     // nftables map elements
}

// Config bounds the table.
type Config struct {
	MaxHoles int           // live holes per family
	TTL      time.Duration // a hole's lifetime from its last arming
	// RecentKeep is how long a forgotten hole still claims the flow log's
	// messages about its filter entry.
	RecentKeep time.Duration
}

// Kind says what an Op does.
type Kind int

const (
	Install Kind = iota // a new hole: add Entries, then Elems (the gate last)
	Rearm               // a live hole again: refresh Entries and Elems
	Revoke              // the last opener leaves: see Finish
	expire              // Expire took the hole out
)

// Op is an operation on one hole in progress: the hole is busy until
// Commit, Abort or Finish.
type Op struct {
	Kind Kind
	Hole hole.Hole
	Parts
	// Ask, if not nil, is the filter entry the kernel must be asked about
	// (is it still there?) to tell whether the hole was consumed; when
	// nil, Known is the answer.
	Ask   *hole.SetEntry
	Known bool
	st    *state
}

// Undo is what the caller deletes from the kernel after Abort or Finish,
// then reports with Done. Until then these objects are busy.
type Undo struct {
	Entries []hole.SetEntry // delete in this order
	Elems   []hole.Elem     // delete in one transaction
	Forgot  *hole.Hole      // the hole leaves the table (its key is busy until Done)
	st      *state
}

// Counts are the table's share of the manager's statistics.
type Counts struct {
	Used, Revoked, Expired uint64
	Live                   int
}

// Info is a read-only view of a live hole.
type Info struct {
	Hole      hole.Hole
	Parts     Parts
	Expires   time.Time
	KnownUsed bool
}

type state struct {
	h        hole.Hole
	p        Parts
	expires  time.Time
	used     bool // the kernel consumed the filter entry before the TTL
	refs     int  // openers that have not revoked it yet
	arms     int  // times the entries were armed
	consumed int  // first SYNs the flow log saw through them
	op       *Op
	wait     chan struct{} // made by the first waiter; closed when op ends
	gen      int           // the table's generation it belongs to (Reset)
}

// logged says whether the flow log saw every arming consumed: each arming
// is consumed at most once, so the kernel holds nothing of the hole.
func (st *state) logged() bool { return st.consumed >= st.arms }

func (st *state) knownUsed() bool { return st.used || st.logged() }

type elemRef struct {
	data []byte
	n    int
}

type recentHole struct {
	k  hole.Key
	at time.Time
}

// Table is safe for concurrent use.
type Table struct {
	cfg Config

	mu      sync.Mutex
	holes   map[hole.Key]*state
	fwdRef  map[hole.SetEntry]int
	elemRef map[string]*elemRef
	live    map[hole.Family]int // holes, installing ones included
	// Objects being deleted from the kernel: an Install that needs one
	// waits until the delete is done.
	delEntries map[hole.SetEntry]chan struct{}
	delElems   map[string]chan struct{}
	lateDel    []hole.SetEntry
	index      map[hole.SetEntry][]*state // live holes by filter entry
	recent     map[hole.SetEntry]recentHole
	gen        int
	counts     Counts
	holding    chan struct{} // while a Hold keeps new holes out; closed at its release
}

// New returns an empty table.
func New(cfg Config) *Table {
	t := &Table{cfg: cfg, delEntries: map[hole.SetEntry]chan struct{}{}, delElems: map[string]chan struct{}{}}
	t.resetLocked()
	return t
}

// Reset forgets every hole (a new Setup). Operations in progress finish
// on the old state; objects being deleted stay busy until their Done.
func (t *Table) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.resetLocked()
}

func (t *Table) resetLocked() {
	t.holes = map[hole.Key]*state{}
	t.fwdRef = map[hole.SetEntry]int{}
	t.elemRef = map[string]*elemRef{}
	t.live = map[hole.Family]int{}
	// Deletes in progress stay marked: they still run in the kernel, and
	// their Done wakes the waiters.
	t.lateDel = nil
	t.index = map[hole.SetEntry][]*state{}
	t.recent = map[hole.SetEntry]recentHole{}
	t.gen++
}

// await releases the lock, waits for ch or ctx, and takes the lock again.
// Waiting is rare: channels are made by the first waiter (waitSt, waitObj).
func (t *Table) await(ctx context.Context, ch chan struct{}) error {
	t.mu.Unlock()
	defer t.mu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Open plans the opening of h with parts p: an Install for a new key, a
// Rearm for the same hole live again (another session, or a retry, expects
// the same connection: each opener holds a reference). A different hole on
// a live key, an element a live hole holds with different data, or the
// family's limit is an error. It waits while the key, or an object it
// needs, is being changed.
func (t *Table) Open(ctx context.Context, h hole.Hole, p Parts, now time.Time) (*Op, error) {
	k := hole.KeyOf(h)
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		st, ok := t.holes[k]
		if ok && st.op != nil {
			if err := t.await(ctx, st.waitCh()); err != nil {
				return nil, err
			}
			continue
		}
		if ok {
			if st.h != h {
				return nil, fmt.Errorf("conflicts with live hole %s", st.h)
			}
			op := &Op{Kind: Rearm, Hole: h, Parts: st.p, st: st}
			op.Ask, op.Known = t.askLocked(st, now)
			t.busyLocked(st, op)
			return op, nil
		}
		if t.holding != nil {
			if err := t.await(ctx, t.holding); err != nil {
				return nil, err
			}
			continue
		}
		if ch := t.deletingLocked(p); ch != nil {
			if err := t.await(ctx, ch); err != nil {
				return nil, err
			}
			continue
		}
		f := hole.FamilyOf(h.From)
		if t.live[f] >= t.cfg.MaxHoles {
			return nil, fmt.Errorf("%d live %s holes: limit reached", t.live[f], f)
		}
		for _, e := range p.Elems {
			if r, ok := t.elemRef[e.ID()]; ok && !bytes.Equal(r.data, e.Data) {
				return nil, fmt.Errorf("%s element %s conflicts with a live hole", e.Map, e.Text)
			}
		}
		st = &state{h: h, p: p, refs: 1, arms: 1, expires: now.Add(t.cfg.TTL), gen: t.gen}
		op := &Op{Kind: Install, Hole: h, Parts: p, st: st}
		t.busyLocked(st, op)
		t.holes[k] = st
		t.live[f]++
		for _, e := range p.Entries {
			t.fwdRef[e]++
		}
		for _, e := range p.Elems {
			r := t.elemRef[e.ID()]
			if r == nil {
				r = &elemRef{data: e.Data}
				t.elemRef[e.ID()] = r
			}
			r.n++
		}
		if len(p.Entries) > 0 {
			fe := p.Entries[0]
			t.index[fe] = append(t.index[fe], st)
		}
		return op, nil
	}
}

// deletingLocked returns a channel closed when a delete in progress of
// one of p's objects ends, or nil.
func (t *Table) deletingLocked(p Parts) chan struct{} {
	for _, e := range p.Entries {
		if ch, ok := t.delEntries[e]; ok {
			if ch == nil {
				ch = make(chan struct{})
				t.delEntries[e] = ch
			}
			return ch
		}
	}
	for _, e := range p.Elems {
		if ch, ok := t.delElems[e.ID()]; ok {
			if ch == nil {
				ch = make(chan struct{})
				t.delElems[e.ID()] = ch
			}
			return ch
		}
	}
	return nil
}

// waitCh returns the channel closed when st's op ends. Under the lock.
func (st *state) waitCh() chan struct{} {
	if st.wait == nil {
		st.wait = make(chan struct{})
	}
	return st.wait
}

func (t *Table) busyLocked(st *state, op *Op) { st.op = op }

func (t *Table) idleLocked(st *state) {
	st.op = nil
	if st.wait != nil {
		close(st.wait)
		st.wait = nil
	}
}

// askLocked says how to tell whether st was consumed: known from the
// bookkeeping, unknowable (too close to the TTL to tell use from expiry),
// or by asking the kernel about its filter entry.
func (t *Table) askLocked(st *state, now time.Time) (*hole.SetEntry, bool) {
	if st.knownUsed() {
		return nil, true
	}
	if len(st.p.Entries) == 0 || !now.Before(st.expires.Add(-time.Second)) {
		return nil, false
	}
	e := st.p.Entries[0]
	return &e, false
}

// Commit ends a successful Install or Rearm (a Revoke op is cancelled:
// the hole stays as it was). consumed answers op.Ask (a
// Rearm settles the previous opening: used or revoked).
func (t *Table) Commit(op *Op, consumed bool, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := op.st
	if st.gen != t.gen { // Reset meanwhile
		t.idleLocked(st)
		return
	}
	switch op.Kind {
	case Install:
		st.expires = now.Add(t.cfg.TTL)
	case Rearm:
		if consumed || (op.Ask == nil && op.Known) {
			t.counts.Used++
		} else {
			t.counts.Revoked++
		}
		st.expires, st.used = now.Add(t.cfg.TTL), false
		st.refs++
		st.arms++
	}
	t.idleLocked(st)
}

// Abort ends a failed Install or Rearm. For an Install, the hole leaves
// the table (at Done) and the returned Undo lists the set members no
// other hole holds, to delete (some may have been added); its elements
// were never added (they go in last, in one transaction).
func (t *Table) Abort(op *Op) *Undo {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := op.st
	if op.Kind != Install || st.gen != t.gen {
		t.idleLocked(st)
		return &Undo{}
	}
	u := &Undo{st: st}
	for _, e := range st.p.Entries {
		if t.unrefEntryLocked(e) {
			u.Entries = append(u.Entries, e)
		}
	}
	t.unrefElemsLocked(st.p.Elems)
	t.unindexLocked(st, false)
	h := st.h
	u.Forgot = &h
	t.markLocked(u)
	return u
}

// Revoke plans the revocation of h by one of its openers. It returns nil
// when there is nothing to do in the kernel: h is unknown, superseded (its
// key holds another hole: not ours to close), or another opener still
// expects it. Otherwise the caller answers op.Ask and calls Finish.
func (t *Table) Revoke(ctx context.Context, h hole.Hole, now time.Time) (*Op, error) {
	k := hole.KeyOf(h)
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		st, ok := t.holes[k]
		if !ok || st.h != h {
			return nil, nil
		}
		if st.op != nil {
			if err := t.await(ctx, st.waitCh()); err != nil {
				return nil, err
			}
			continue
		}
		if st.refs > 1 {
			st.refs--
			return nil, nil
		}
		op := &Op{Kind: Revoke, Hole: h, Parts: st.p, st: st}
		op.Ask, op.Known = t.askLocked(st, now)
		t.busyLocked(st, op)
		return op, nil
	}
}

// Finish ends a Revoke: the hole leaves the table, and the Undo lists the
// objects to delete. Elements are deleted unless the flow log saw the
// hole consumed (the datapath took them). A filter entry of a logged hole
// that no other hole holds is not deleted now: it went with the SYN, and
// the janitor checks (Late).
func (t *Table) Finish(op *Op, consumed bool) *Undo {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := op.st
	if st.gen != t.gen {
		t.idleLocked(st)
		return &Undo{}
	}
	if consumed || (op.Ask == nil && op.Known) {
		t.counts.Used++
	} else {
		t.counts.Revoked++
	}
	u := &Undo{}
	gone := t.unrefElemsLocked(st.p.Elems)
	logged := st.logged()
	if !logged {
		u.Elems = gone
	}
	for _, e := range slices.Backward(st.p.Entries) {
		if logged && t.fwdRef[e] == 1 {
			t.unrefEntryLocked(e)
			t.lateDel = append(t.lateDel, e)
			continue
		}
		if t.unrefEntryLocked(e) {
			u.Entries = append(u.Entries, e)
		}
	}
	t.unindexLocked(st, true)
	h := st.h
	u.Forgot, u.st = &h, st
	t.markLocked(u)
	return u
}

// markLocked marks u's objects as being deleted.
func (t *Table) markLocked(u *Undo) {
	for _, e := range u.Entries {
		if _, ok := t.delEntries[e]; !ok {
			t.delEntries[e] = nil // a waiter makes the channel
		}
	}
	for _, e := range u.Elems {
		if _, ok := t.delElems[e.ID()]; !ok {
			t.delElems[e.ID()] = nil
		}
	}
}

// Done reports that u's deletes were carried out (or failed): the hole
// it forgot, if any, leaves the table now.
func (t *Table) Done(u *Undo) {
	if u == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if st := u.st; st != nil {
		k := hole.KeyOf(st.h)
		if t.holes[k] == st {
			delete(t.holes, k)
		}
		if st.gen == t.gen {
			t.live[hole.FamilyOf(st.h.From)]--
		}
		t.idleLocked(st)
	}
	for _, e := range u.Entries {
		if ch, ok := t.delEntries[e]; ok {
			if ch != nil {
				close(ch)
			}
			delete(t.delEntries, e)
		}
	}
	for _, e := range u.Elems {
		if ch, ok := t.delElems[e.ID()]; ok {
			if ch != nil {
				close(ch)
			}
			delete(t.delElems, e.ID())
		}
	}
}
