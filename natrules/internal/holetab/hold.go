package holetab

import (
	"context"
	"sync"

	"github.com/ftpalg/ftpalg/natrules/hole"
)

// Hold keeps the live holes as they are while a drift repair adds their
// objects back to the kernel from a view of them: a Revoke (or expiry)
// that ended between the view and the add would have its objects added
// back, armed for no one; an install or re-arm would have its objects
// lost if the repair replaces the kernel's copy. Hold waits for the
// operations in progress to end and marks the holes busy: an Open or
// Revoke of one waits until release. With installs, new holes wait too;
// without (the iptables backend's prepare runs in the repair's goroutine,
// and it has no elements to lose), installs run on and are not returned.
// It returns the held holes; release must be called (also after an
// error); calling it again does nothing.
func (t *Table) Hold(ctx context.Context, installs bool) (held []Info, release func(), err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	mine := map[*state]bool{}
	var gate chan struct{}
	if installs && t.holding == nil {
		gate = make(chan struct{})
		t.holding = gate
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			for st := range mine {
				t.idleLocked(st)
			}
			if gate != nil {
				close(gate)
				t.holding = nil
			}
		})
	}
	for {
		var wait chan struct{}
		for _, st := range t.holes {
			switch {
			case st.op == nil:
				t.busyLocked(st, &Op{Kind: Rearm, Hole: st.h, Parts: st.p, st: st})
				mine[st] = true
			case !mine[st] && (installs || st.op.Kind != Install) && wait == nil:
				wait = st.waitCh()
			}
		}
		if wait == nil {
			break
		}
		if err := t.await(ctx, wait); err != nil {
			return nil, release, err
		}
	}
	for st := range mine {
		if t.holes[hole.KeyOf(st.h)] == st {
			held = append(held, Info{Hole: st.h, Parts: st.p, Expires: st.expires, KnownUsed: st.knownUsed()})
		}
	}
	return held, release, nil
}
