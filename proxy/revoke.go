package proxy

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/ftpalg/ftpalg/alg"
)

// revokeDelay is how long superseded holes wait to be closed, in one batch.
const revokeDelay = 20 * time.Millisecond

// revoker closes superseded holes in batches, shortly after the line that
// superseded them went out. Closing them is housekeeping: a used hole is
// spent already and an unused one expires with its kernel TTL. Doing it at
// once put netlink calls into the very window in which the client opens
// its next data connection. A session's cleanup flushes the batch first,
// so that nothing of the session is left open when it ends.
type revoker struct {
	holes Pinholes

	mu      sync.Mutex // guards pending
	pending []pendingRevoke
	run     sync.Mutex // held while a batch is closed: flush waits for it
	kick    chan struct{}
}

type pendingRevoke struct {
	h   alg.Hole
	log *slog.Logger
}

func newRevoker(holes Pinholes) *revoker {
	return &revoker{holes: holes, kick: make(chan struct{}, 1)}
}

// add queues holes for closing.
func (r *revoker) add(log *slog.Logger, hs []alg.Hole) {
	if len(hs) == 0 {
		return
	}
	r.mu.Lock()
	for _, h := range hs {
		r.pending = append(r.pending, pendingRevoke{h, log})
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// flush closes every queued hole, and waits for a batch being closed.
func (r *revoker) flush() {
	r.run.Lock()
	defer r.run.Unlock()
	r.mu.Lock()
	batch := r.pending
	r.pending = nil
	r.mu.Unlock()
	for _, p := range batch {
		if err := r.holes.Revoke(context.Background(), toNat(p.h)); err != nil {
			// The kernel TTL still bounds it; say so and go on.
			p.log.Warn("revoke pinhole failed", "hole", holeString(p.h), "err", err)
		}
	}
}

func (r *revoker) loop(ctx context.Context) {
	t := time.NewTimer(revokeDelay)
	t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.flush()
			return
		case <-r.kick:
		}
		t.Reset(revokeDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			r.flush()
			return
		case <-t.C:
		}
		r.flush()
	}
}
