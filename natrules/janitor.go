package natrules

import (
	"context"
	"sync"
	"time"

	"github.com/ftpalg/ftpalg/natrules/internal/holetab"
)

// janitor is the manager's background round, at most once per
// gcInterval: it forgets expired holes, deletes the late filter entries
// and the dead per-hole rules (one iptables-restore per family).
type janitor struct {
	mu     sync.Mutex // guards cancel and done; never held while a round runs
	cancel context.CancelFunc
	done   chan struct{}
	kick   chan struct{}
}

func (j *janitor) wake() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

func (j *janitor) start(round func(ctx context.Context)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	j.cancel, j.done = cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		t := time.NewTicker(gcInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-j.kick:
				// batch: let more revokes arrive
				select {
				case <-ctx.Done():
					return
				case <-time.After(gcInterval):
				}
			}
			round(ctx)
		}
	}(j.done)
}

// stop stops the goroutine and waits for its round to end (not under mu).
func (j *janitor) stop() {
	j.mu.Lock()
	cancel, done := j.cancel, j.done
	j.cancel, j.done = nil, nil
	j.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// round is one janitor round.
func (m *Manager) round(ctx context.Context) {
	m.flow.drain()
	m.markUsed()
	m.expire()
	m.deleteLate()
	m.flow.prune()
	if m.trim != nil {
		m.trim()
	}
	if m.iptb != nil && !m.detached.Load() {
		if err := m.iptb.gc(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("per-hole rule GC failed", "err", err)
		}
	}
}

// expire forgets the holes whose TTL ran out. The kernel has dropped
// their entries already (same TTL, set earlier); only the bookkeeping
// goes.
func (m *Manager) expire() {
	for _, u := range m.tab.Expire(time.Now()) {
		m.forgot(u)
	}
}

// forgot tells the parts that u's hole left the table, then the table.
func (m *Manager) forgot(u *holetab.Undo) {
	if h := u.Forgot; h != nil {
		if b := m.backend(); b != nil {
			b.drop(*h)
		}
		m.flow.forgot(keyOf(*h))
	}
	m.tab.Done(u)
}

// consumed says whether the kernel has consumed a hole's filter entry
// (the SET --del-set on its first SYN) while its TTL still ran.
func consumed(hi holetab.Info, sets holeSets, now time.Time) bool {
	if hi.KnownUsed {
		return true
	}
	// Not (yet) in the flow log, or the log is off: ask the kernel.
	if len(hi.Parts.Entries) == 0 || !now.Before(hi.Expires.Add(-time.Second)) {
		return false // too close to the TTL to tell use from expiry
	}
	present, err := sets.test(hi.Parts.Entries[0])
	return err == nil && !present
}

// markUsed finds the live holes the kernel has consumed, with one dump
// per filter set, so that holes used and then left to their TTL count as
// used.
func (m *Manager) markUsed() {
	if m.flow.marksUsed() {
		return // the flow log marks them as they are used
	}
	now := time.Now()
	if !m.tab.Unsure(now) {
		return
	}
	sets := map[string]map[setEntry]bool{}
	for _, f := range m.fams {
		in, err := m.sets.members(fwdSet(f))
		if err != nil {
			m.flow.rescan() // what the flow log could not mark waits for the next round
			return
		}
		sets[fwdSet(f)] = in
	}
	m.tab.MarkAbsent(now, func(e setEntry) (in, ok bool) {
		s, ok := sets[e.Set]
		return s[e], ok
	})
}

// deleteLate deletes the filter entries of logged holes that Revoke left
// to the janitor, if the kernel still has them (normally not: the SYN took
// them) and no live hole holds them again. One listing per set serves the
// whole batch; a set that cannot be listed has its entries deleted
// blindly.
func (m *Manager) deleteLate() {
	u := m.tab.Late()
	defer m.tab.Done(u)
	if m.detached.Load() {
		return // left to the kernel's TTL (adopt.go)
	}
	present := map[string]map[setEntry]bool{}
	for _, e := range u.Entries {
		in, ok := present[e.Set]
		if !ok {
			in, _ = m.sets.members(e.Set)
			present[e.Set] = in
		}
		if in != nil && !in[e] {
			continue
		}
		if err := m.sets.del(e); err != nil {
			m.log.Warn("delete consumed filter entry", "entry", e, "err", err)
		}
	}
}
