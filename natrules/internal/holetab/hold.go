package holetab

import (
	"context"
	"sync"

	"github.com/ftpalg/ftpalg/natrules/hole"
)

// Hold keeps the live holes as they are while a drift repair adds their
// objects back to the kernel from a view of them: a Revoke (or expiry)
// that ended between the view and the add would have its objects added
// back, armed for no one. Hold waits for the operations in progress to
// end, except installs (one may need the caller: the iptables backend's
// prepare runs in the repair's goroutine; a hole installed meanwhile adds
// its objects itself), and marks the other holes busy: an Open or Revoke
// of one waits until release. It returns the held holes; release must be
// called (also after an error); calling it again does nothing.
func (t *Table) Hold(ctx context.Context) (held []Info, release func(), err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	mine := map[*state]bool{}
	var once sync.Once
	release = func() {
		once.Do(func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			for st := range mine {
				t.idleLocked(st)
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
			case !mine[st] && st.op.Kind != Install && wait == nil:
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
