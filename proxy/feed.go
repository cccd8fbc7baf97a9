package proxy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ftpalg/ftpalg/alg"
)

// feed runs the engine over data one line at a time. The engine runs
// under the session lock; the kernel calls a line needs (closing the holes
// it superseded, opening the hole it announces) run after the lock is
// released and before the line is passed on.
func (ss *session) feed(ctx context.Context, from alg.Side, data []byte, toPeer, toSender *[]byte, revokes *[]alg.Hole, urgent *int) error {
	for len(data) > 0 {
		n := len(data)
		if i := bytes.IndexByte(data, '\n'); i >= 0 && !ss.opaque.Load() {
			n = i + 1
		}
		if err := ss.feedLine(ctx, from, data[:n], toPeer, toSender, revokes, urgent); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// feedLine feeds one line (or the tail of a chunk without a line end) and
// carries out its action. At most one action of a line opens a hole.
func (ss *session) feedLine(ctx context.Context, from alg.Side, data []byte, toPeer, toSender *[]byte, revokes *[]alg.Hole, urgent *int) error {
	var notes []refusalNote
	var audit []auditRecord
	defer func() {
		// After the unlock: these write.
		ss.logRefusals(notes)
		for _, r := range audit {
			ss.queueAudit(r)
		}
	}()
	toClient := toSender
	if from == alg.FromServer {
		toClient = toPeer
	}
	var pending *alg.Action // the action whose hole is opened after the unlock
	var login alg.LoginEvent
	ss.mu.Lock()
	wasOpaque := ss.eng.Opaque()
	ss.ports.side = from
	err := ss.eng.Feed(from, data, func(a alg.Action) error {
		ss.refusedReply(&a)
		*revokes = append(*revokes, a.Revoke...)
		if a.Login != alg.LoginNone {
			login = a.Login
		}
		if a.Refusal != alg.RefusedNone {
			ss.srv.metrics.Refused.WithLabelValues(string(a.Refusal)).Inc()
			if n, ok := ss.refusals.note(time.Now(), from, a); ok {
				notes = append(notes, n)
			}
		}
		if t := a.Transfer; t != nil {
			if r, ok := ss.transfer(t); ok {
				audit = append(audit, r)
			}
		}
		if a.Open != nil {
			a.Output = append([]byte(nil), a.Output...) // the engine reuses its buffer
			pending = &a
			return nil
		}
		return ss.apply(from, a, toPeer, toSender, toClient, urgent)
	})
	opaque := ss.eng.Opaque()
	ss.mu.Unlock()
	if login == alg.LoginSucceeded || opaque != wasOpaque {
		ss.loggedIn()
	}
	if opaque != wasOpaque {
		ss.opaque.Store(true)
		ss.log.Warn("AUTH TLS passthrough engaged: control channel no longer inspected, no data holes will be opened for this session")
	}
	if login == alg.LoginFailed && err == nil {
		err = ss.loginFailed(toClient)
	}
	if pending != nil && err == nil {
		err = ss.open(ctx, from, *pending, toPeer, toSender, toClient, revokes, urgent)
	}
	if err != nil && !errors.Is(err, errSessionEnded) && !errors.Is(err, alg.ErrEnded) {
		r := "engine: " + err.Error()
		ss.reason.CompareAndSwap(nil, &r)
	}
	return err
}

// open installs the hole a's line announces, then passes the line on; if
// the install fails, the client is told instead (fail closed: the
// rewritten endpoint is never sent).
func (ss *session) open(ctx context.Context, from alg.Side, a alg.Action, toPeer, toSender, toClient *[]byte, revokes *[]alg.Hole, urgent *int) error {
	// The new hole may reuse a pool port that a revoked one held (revoked
	// by this line or an earlier one of the chunk): the kernel must drop
	// the old hole first.
	ss.revoke(ctx, *revokes)
	*revokes = (*revokes)[:0]
	h := *a.Open
	t0 := time.Now()
	var err error
	if h.Relay {
		err = ss.relayOpen(ctx, h, ss.relayOptsFor(h))
	} else {
		err = ss.srv.holes.Open(ctx, toNat(h))
	}
	ss.srv.metrics.RuleInstall.Observe(time.Since(t0).Seconds())
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if err != nil {
		ss.ports.side = from // OpenFailed frees the port on this pump's side
		ss.srv.metrics.HoleFailures.Inc()
		ss.log.Error("open pinhole failed; endpoint withheld", "hole", holeString(h), "err", err)
		*toClient = append(*toClient, ss.eng.OpenFailed(h)...)
		return nil
	}
	ss.srv.metrics.endpoint(h.Kind).Inc()
	if !h.Relay { // a relay's listener revokes its own local hole
		ss.remember(toNat(h))
	}
	if ss.log.Enabled(ctx, slog.LevelDebug) { // holeString formats
		ss.log.Debug("pinhole opened", "hole", holeString(h))
	}
	return ss.apply(from, a, toPeer, toSender, toClient, urgent)
}

// apply passes an action's output on, answers the sender, or ends the
// session. Caller holds ss.mu.
func (ss *session) apply(from alg.Side, a alg.Action, toPeer, toSender, toClient *[]byte, urgent *int) error {
	switch a.Verdict {
	case alg.Forward, alg.Rewrite:
		// The first line the client completes after its urgent mark
		// carries it, if that line is an ABOR. TCP has one urgent
		// pointer: the latest mark wins.
		if a.Urgent > 0 && (ss.urgentIn || ss.tlsUp()) {
			*urgent = len(*toPeer) + min(a.Urgent, len(a.Output))
		}
		if from == alg.FromClient {
			ss.urgentIn = false
		}
		*toPeer = append(*toPeer, a.Output...)
	case alg.Answer:
		*toSender = append(*toSender, a.Output...)
		if a.StartTLS { // the client pump's alone: the server pump must not write it
			ss.startTLS = true
		}
	case alg.End:
		*toClient = append(*toClient, a.Output...)
		r := a.Reason
		ss.reason.CompareAndSwap(nil, &r)
		return errSessionEnded
	}
	return nil
}
