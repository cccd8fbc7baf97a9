package natrules

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ftpalg/ftpalg/natrules/internal/holetab"
)

// Open installs a hole for one connection. When it returns nil the hole is
// in place in the kernel; the error carries the kernel's or iptables'
// message otherwise, and nothing of the hole is left (fail closed).
// Opening a live hole again refreshes its TTL.
func (m *Manager) Open(ctx context.Context, h Hole) error {
	err := m.open(ctx, h)
	if err != nil {
		m.failed.Add(1)
		return fmt.Errorf("open pinhole %s: %w", h, err)
	}
	m.opened.Add(1)
	return nil
}

func (m *Manager) open(ctx context.Context, h Hole) error {
	h, err := normalize(h)
	if err != nil {
		return err
	}
	f := FamilyOf(h.From)
	if !m.enabled(f) {
		return fmt.Errorf("%s not enabled", f)
	}
	nat := m.backend()
	if !m.setUp.Load() || nat == nil {
		return errors.New("not set up")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	op, err := m.tab.Open(ctx, h, nat.parts(h), time.Now())
	if err != nil {
		return err
	}
	k := keyOf(h)
	if op.Kind == holetab.Rearm {
		// The same hole again: another session (or a retry) expects the
		// same connection, e.g. a client whose second session got the
		// server's recycled passive port. The kernel entry is re-armed
		// and shared; each opener holds a reference, and only the last
		// Revoke closes it (an earlier one would cut the other session's
		// hole).
		consumed := m.answer(op)
		m.flow.armed(k) // before the kernel can see a SYN
		err := m.addEntries(op.Entries)
		if err == nil {
			err = nat.arm(f, op.Elems, true)
		}
		if err != nil {
			m.tab.Done(m.tab.Abort(op))
			return err
		}
		m.tab.Commit(op, consumed, time.Now())
		return nil
	}
	if err := nat.prepare(ctx, h); err != nil {
		m.undo(m.tab.Abort(op))
		return err
	}
	m.flow.armed(k) // before the kernel can see a SYN
	// The set members in order, then the NAT elements (the gate) in one
	// transaction.
	err = m.addEntries(op.Entries)
	if err == nil {
		err = nat.arm(f, op.Elems, false)
	}
	if err != nil {
		m.undo(m.tab.Abort(op))
		return err
	}
	m.tab.Commit(op, false, time.Now())
	return nil
}

func (m *Manager) addEntries(es []setEntry) error {
	for _, e := range es {
		if err := m.sets.add(e, m.ttl); err != nil {
			return fmt.Errorf("ipset add %s: %w", e, err)
		}
	}
	return nil
}

// answer tells whether the hole of op was consumed, asking the kernel if
// the bookkeeping does not know.
func (m *Manager) answer(op *holetab.Op) bool {
	if op.Ask == nil {
		return op.Known
	}
	present, err := m.sets.test(*op.Ask)
	return err == nil && !present
}

// undo deletes what the table says no hole holds any more (the NAT gate
// first), then lets the parts and the table forget the hole.
func (m *Manager) undo(u *holetab.Undo) error {
	if m.detached.Load() {
		m.forgot(u) // the kernel's TTL removes them (adopt.go)
		return nil
	}
	var errs []error
	if len(u.Elems) > 0 && u.Forgot != nil {
		if err := m.backend().disarm(FamilyOf(u.Forgot.From), u.Elems); err != nil {
			errs = append(errs, err)
		}
	}
	for _, e := range u.Entries {
		if err := m.sets.del(e); err != nil {
			errs = append(errs, fmt.Errorf("ipset del %s: %w", e, err))
		}
	}
	m.forgot(u)
	return errors.Join(errs...)
}

// Revoke closes a hole: its set entries are deleted over netlink (the
// gate closes at once) and its per-hole rules, now inert, are queued for a
// batched deletion. Revoking an unknown hole is not an error.
func (m *Manager) Revoke(ctx context.Context, h Hole) error {
	h, err := normalize(h)
	if err != nil {
		return fmt.Errorf("revoke pinhole %s: %w", h, err)
	}
	m.flow.drain() // is the hole used? the log may know
	op, err := m.tab.Revoke(ctx, h, time.Now())
	if err != nil {
		return fmt.Errorf("revoke pinhole %s: %w", h, err)
	}
	if op == nil {
		// Unknown, another session's hole on the same key (this one
		// expired and its port was lent again), or another opener still
		// expects it.
		return nil
	}
	// The flow log's word that the kernel consumed the hole (its elements
	// go with the first SYN) saves the nftables transaction; a logged
	// hole's filter entry went with its SYN too: the janitor checks.
	if err := m.undo(m.tab.Finish(op, m.answer(op))); err != nil {
		return fmt.Errorf("revoke pinhole %s: %w", h, err)
	}
	return nil
}

// CloseSession ends one session's use of the firewall. It revokes the
// session's outstanding holes (open) and deletes the tracked connections
// that came through them, so that the session's data connections do not
// outlive it. A hole that is live for another session (same client, server
// and port) keeps its connections: deleting them would cut that session's
// transfer. The connections of holes the session superseded earlier
// (opened, its history) are left alone and only forgotten: by then another
// session of the same client may have been given the same server port,
// and its running transfer would be cut (the 2,000-session load test saw
// one in 37,000); FTP ends a transfer before the next one begins, and the
// server closes its side when the session ends.
func (m *Manager) CloseSession(ctx context.Context, open, opened []Hole) error {
	var errs []error
	for _, h := range open {
		if err := m.Revoke(ctx, h); err != nil {
			errs = append(errs, err)
		}
	}
	notLive := func(hs []Hole, seen map[holeKey]bool) []Hole {
		var out []Hole
		for _, h := range hs {
			h, err := normalize(h)
			if err != nil {
				continue
			}
			k := keyOf(h)
			if !seen[k] && !m.tab.Live(k) {
				seen[k] = true
				out = append(out, h)
			}
		}
		return out
	}
	seen := map[holeKey]bool{}
	gone := notLive(open, seen)
	for _, h := range notLive(opened, seen) {
		m.flow.drop(keyOf(h))
	}
	if m.detached.Load() {
		// Not ours to delete any more (adopt.go): a connection between
		// the same hosts and port may be the new process's.
		for _, h := range gone {
			m.flow.drop(keyOf(h))
		}
		gone = nil
	}
	walk, err := m.flow.deleteKnown(gone)
	if err != nil {
		errs = append(errs, err)
	}
	if len(walk) > 0 {
		if err := m.clean.clean(ctx, walk); err != nil {
			errs = append(errs, fmt.Errorf("delete tracked connections: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close session: %w", err)
	}
	return nil
}

// Forget says a session no longer needs what the flow log learnt about h
// (it fell out of the session's history): unless h is live again, its
// flows leave the table, so a long session keeps a bounded share of it.
func (m *Manager) Forget(h Hole) {
	h, err := normalize(h)
	if err != nil {
		return
	}
	if k := keyOf(h); !m.tab.Live(k) {
		m.flow.drop(k)
	}
}

// FlowBytes returns, for each hole, the bytes (both directions, IP layer,
// headers included) of the latest data connection that came through it,
// from conntrack accounting: the data stays in the kernel. With the flow
// log the connection's tuple is known and the lookup is exact; without it
// (log off, or messages lost since the hole was armed) it walks the
// conntrack table and sums every tracked connection From -> To.
func (m *Manager) FlowBytes(holes []Hole) ([]uint64, error) { return m.flow.bytes(holes) }
