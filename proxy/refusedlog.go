package proxy

import (
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// A flood of refused connections (one address over its cap, a blocked
// address, the global limit) must not turn each into a log line: per
// window of refusedEvery, the first refusedBurst refusals are logged one
// by one and the rest counted by reason, in one summary line at the end
// of the window. The metric still counts every refusal.
const (
	refusedBurst = 10
	refusedEvery = 10 * time.Second
)

// refusedLog throttles the "session refused" warnings of all listeners.
type refusedLog struct {
	log *slog.Logger
	// after schedules the summary (time.AfterFunc; a fake in tests).
	after func(time.Duration, func())

	mu         sync.Mutex // never held across the log write
	start      time.Time  // of the window
	logged     int        // in the window
	suppressed map[string]int
}

func newRefusedLog(log *slog.Logger) *refusedLog {
	return &refusedLog{log: log, suppressed: map[string]int{},
		after: func(d time.Duration, f func()) { time.AfterFunc(d, f) }}
}

// allow says whether the refusal labelled label (the metric's reason) is
// logged on its own; if not, it is counted for the window's summary.
func (r *refusedLog) allow(now time.Time, label string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.start) >= refusedEvery {
		r.start, r.logged = now, 0
	}
	if r.logged < refusedBurst {
		r.logged++
		return true
	}
	if len(r.suppressed) == 0 {
		r.after(r.start.Add(refusedEvery).Sub(now), r.flush)
	}
	r.suppressed[label]++
	return false
}

// flush logs the summary of the refusals not logged yet, if any.
func (r *refusedLog) flush() {
	r.mu.Lock()
	sum := r.suppressed
	r.suppressed = map[string]int{}
	r.mu.Unlock()
	if len(sum) == 0 {
		return
	}
	total := 0
	attrs := make([]any, 0, len(sum))
	for _, reason := range slices.Sorted(maps.Keys(sum)) {
		total += sum[reason]
		attrs = append(attrs, slog.Int(reason, sum[reason]))
	}
	r.log.Warn("sessions refused, not logged one by one", "suppressed", total, slog.Group("by_reason", attrs...))
}
