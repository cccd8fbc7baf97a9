package proxy

import (
	"slices"
	"time"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/natrules"
)

// A session's records: its transfers for the audit, its holes for the
// final cleanup.

// transfer tracks a transfer's start and returns its audit record at the
// end, for the caller to queue after releasing ss.mu. Caller holds ss.mu.
func (ss *session) transfer(t *alg.Transfer) (auditRecord, bool) {
	now := time.Now()
	if t.Phase == alg.TransferStart {
		ss.xferStart = now
		return auditRecord{}, false
	}
	start := ss.xferStart
	if start.IsZero() {
		start = now
	}
	ss.xferStart = time.Time{}
	ss.audited = true
	r := auditRecord{
		session: ss.id, client: addrPortOf(ss.client.RemoteAddr()), server: addrPortOf(ss.server.RemoteAddr()),
		mode: ss.srv.cfg.Policy.Mode.String(), command: t.Command, file: t.Arg, code: t.Code,
		hole: toNat(t.Hole), hasHole: t.HasHole, start: start, end: now,
	}
	if t.HasHole && t.Hole.Relay {
		r.relayID = t.Hole.ID
	}
	return r, true
}

// queueAudit queues r for the audit log; a relayed transfer's waits for
// its relay's byte count (relay.go).
func (ss *session) queueAudit(r auditRecord) {
	if r.relayID != 0 {
		ss.relayAudit(r, r.relayID)
		return
	}
	ss.srv.audit.add(r)
}

// remember adds h to the session's history of holes (once).
func (ss *session) remember(h natrules.Hole) {
	if slices.Contains(ss.opened, h) {
		return
	}
	if len(ss.opened) >= HoleHistory {
		ss.srv.holes.Forget(ss.opened[0])
		copy(ss.opened, ss.opened[1:])
		ss.opened = ss.opened[:len(ss.opened)-1]
	}
	ss.opened = append(ss.opened, h)
}
