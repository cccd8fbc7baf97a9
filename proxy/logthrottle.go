package proxy

import (
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/ftpalg/ftpalg/alg"
)

// A peer that sends nothing but bad lines must not turn each into a log
// line: a flood would fill the disk (docs/limits-and-defaults.md has the
// measurements). Per session, the first refusalBurst refusals are logged
// one by one; later ones are counted by reason and logged as one summary
// line per refusalEvery, and at the session's end. The metric still counts
// every refusal.
const (
	refusalBurst = 5
	refusalEvery = 10 * time.Second
)

// refusalLog is one session's refusal log state, guarded by session.mu.
type refusalLog struct {
	logged     int
	suppressed map[alg.Refusal]int // since the last summary
	since      time.Time           // first refusal suppressed since the last summary
}

// refusalNote is a log line decided under the session lock and written
// after it is released.
type refusalNote struct {
	summary map[alg.Refusal]int // nil: one refusal, below
	from    alg.Side
	reason  alg.Refusal
	verdict alg.Verdict
}

// note records a refusal and returns the line to log for it, if any.
func (r *refusalLog) note(now time.Time, from alg.Side, a alg.Action) (refusalNote, bool) {
	if r.logged < refusalBurst {
		r.logged++
		return refusalNote{from: from, reason: a.Refusal, verdict: a.Verdict}, true
	}
	if r.suppressed == nil {
		r.suppressed = map[alg.Refusal]int{}
	}
	if len(r.suppressed) == 0 {
		r.since = now
	}
	r.suppressed[a.Refusal]++
	if now.Sub(r.since) < refusalEvery {
		return refusalNote{}, false
	}
	return r.flush()
}

// flush returns the summary of the refusals not logged yet, if any.
func (r *refusalLog) flush() (refusalNote, bool) {
	if len(r.suppressed) == 0 {
		return refusalNote{}, false
	}
	n := refusalNote{summary: r.suppressed}
	r.suppressed = map[alg.Refusal]int{}
	return n, true
}

func (ss *session) logRefusals(notes []refusalNote) {
	for _, n := range notes {
		if n.summary == nil {
			ss.log.Info("input refused", "from", n.from.String(), "reason", string(n.reason), "verdict", n.verdict.String())
			continue
		}
		total := 0
		attrs := make([]any, 0, len(n.summary))
		for _, reason := range slices.Sorted(maps.Keys(n.summary)) {
			total += n.summary[reason]
			attrs = append(attrs, slog.Int(string(reason), n.summary[reason]))
		}
		ss.log.Info("input refused, not logged one by one", "suppressed", total, slog.Group("by_reason", attrs...))
	}
}
