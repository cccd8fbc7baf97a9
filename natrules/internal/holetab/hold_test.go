package holetab

import (
	"context"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/natrules/hole"
)

// A Reset (a second Setup) while a delete is in progress: an Open waiting
// for that delete still wakes when it is done, and the delete's objects
// stay busy for Opens that come after the Reset.
func TestTableResetDuringDelete(t *testing.T) {
	ctx := context.Background()
	tab := newT(8)
	if _, err := open(t, tab, hB, false); err != nil {
		t.Fatal(err)
	}
	u := revoking(t, tab, hB)
	if len(u.Entries) != 1 || len(u.Elems) != 1 {
		t.Fatalf("undo %+v", u)
	}
	opens := func() chan error {
		done := make(chan error, 1)
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			op, err := tab.Open(wctx, hC, parts(hC), t0)
			if err == nil {
				tab.Commit(op, false, t0)
			}
			done <- err
		}()
		return done
	}
	waits := func(name string, ch chan error) {
		t.Helper()
		select {
		case err := <-ch:
			t.Fatalf("open %s the reset, during a delete of its member, did not wait (%v)", name, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	before := opens()
	waits("before", before)
	tab.Reset()
	after := opens()
	waits("after", after)
	tab.Done(u)
	for name, ch := range map[string]chan error{"before": before, "after": after} {
		if err := <-ch; err != nil {
			t.Errorf("open %s the reset, once the delete is done: %v", name, err)
		}
	}
}

// Hold (a drift repair re-adding the live holes' objects) waits for a
// revoke in progress to end, holds the live holes (a Revoke of one waits
// for release, so nothing it deletes is added back after it), and
// neither waits for nor returns a hole being installed.
func TestTableHold(t *testing.T) {
	ctx := context.Background()
	tab := newT(8)
	for _, h := range []hole.Hole{hA, hB} {
		if _, err := open(t, tab, h, false); err != nil {
			t.Fatal(err)
		}
	}
	u := revoking(t, tab, hA)
	iop, err := tab.Open(ctx, h6, parts(h6), t0) // installing
	if err != nil {
		t.Fatal(err)
	}
	hr := holdWaiting(t, tab, false, "revoke")
	tab.Done(u)
	r := <-hr
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.held) != 1 || r.held[0].Hole != hB {
		t.Fatalf("held %+v, want hB only", r.held)
	}
	revoked := make(chan *Op, 1)
	go func() {
		op, err := tab.Revoke(ctx, hB, t0)
		if err != nil {
			t.Error(err)
		}
		revoked <- op
	}()
	select {
	case <-revoked:
		t.Fatal("revoke of a held hole did not wait")
	case <-time.After(50 * time.Millisecond):
	}
	if c := tab.Counts(); c.Live != 1 {
		t.Errorf("a held hole is not counted live: %+v", c)
	}
	r.release()
	r.release() // twice: nothing more
	op := <-revoked
	if op == nil {
		t.Fatal("revoke after release: nothing to do")
	}
	tab.Done(tab.Finish(op, false))
	tab.Commit(iop, false, t0)
	if c := tab.Counts(); c.Live != 1 || c.Revoked != 2 {
		t.Errorf("counts %+v", c)
	}
}

// Hold with installs waits for an install in progress (then holds its
// hole), and an Open of a new hole waits until release.
func TestTableHoldInstalls(t *testing.T) {
	ctx := context.Background()
	tab := newT(8)
	iop, err := tab.Open(ctx, hA, parts(hA), t0)
	if err != nil {
		t.Fatal(err)
	}
	hr := holdWaiting(t, tab, true, "install")
	tab.Commit(iop, false, t0)
	r := <-hr
	if r.err != nil || len(r.held) != 1 || r.held[0].Hole != hA {
		t.Fatalf("held %+v, %v; want hA", r.held, r.err)
	}
	opened := make(chan error, 1)
	go func() {
		_, err := open(t, tab, hB, false)
		opened <- err
	}()
	select {
	case err := <-opened:
		t.Fatalf("open of a new hole during a hold did not wait (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	r.release()
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	if c := tab.Counts(); c.Live != 2 {
		t.Errorf("counts %+v", c)
	}
}

// holdRes is what a Hold returned.
type holdRes struct {
	held    []Info
	release func()
	err     error
}

// holdWaiting starts a Hold (of installs too, if installs) and checks it
// still waits for the change in progress (what) after 50 ms; the channel
// gives its result once it returns.
func holdWaiting(t *testing.T, tab *Table, installs bool, what string) <-chan holdRes {
	t.Helper()
	hr := make(chan holdRes, 1)
	go func() {
		held, release, err := tab.Hold(context.Background(), installs)
		hr <- holdRes{held, release, err}
	}()
	select {
	case r := <-hr:
		t.Fatalf("hold did not wait for the %s in progress (held %d holes, %v)", what, len(r.held), r.err)
	case <-time.After(50 * time.Millisecond):
	}
	return hr
}
