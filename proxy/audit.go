package proxy

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/ftpalg/ftpalg/natrules"
)

// FlowCounter reads the bytes of the data connections that went through
// holes, from conntrack accounting (the data never leaves the kernel).
type FlowCounter func(holes []natrules.Hole) ([]uint64, error)

// auditRecord is one finished transfer waiting for its byte count.
type auditRecord struct {
	session        uint64
	client, server netip.AddrPort
	mode           string
	command, file  string
	code           int
	hole           natrules.Hole
	hasHole        bool
	start, end     time.Time
}

// auditor writes one log line per data transfer. Byte counts need a dump of
// the conntrack table, so records are batched: one dump serves every
// transfer that ended in the last interval. A session that ends asks for a
// flush first, because its cleanup deletes the flows that hold the counters.
type auditor struct {
	in      chan auditRecord
	flush   chan chan struct{}
	counter FlowCounter
	log     *slog.Logger
	metrics *Metrics
}

func newAuditor(counter FlowCounter, log *slog.Logger, m *Metrics) *auditor {
	return &auditor{in: make(chan auditRecord, 4096), flush: make(chan chan struct{}), counter: counter, log: log, metrics: m}
}

// add queues a record; it never blocks a session (a full queue logs the
// transfer at once, without bytes).
func (a *auditor) add(r auditRecord) {
	select {
	case a.in <- r:
	default:
		a.write(r, 0, false)
	}
}

// sync waits until every record queued so far is written, or ctx ends.
func (a *auditor) sync(ctx context.Context) {
	done := make(chan struct{})
	select {
	case a.flush <- done:
	case <-ctx.Done():
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func (a *auditor) run(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var pending []auditRecord
	drainInput := func() {
		for {
			select {
			case r := <-a.in:
				pending = append(pending, r)
			default:
				return
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			drainInput()
			a.resolve(pending)
			return
		case r := <-a.in:
			pending = append(pending, r)
			if len(pending) >= 512 {
				a.resolve(pending)
				pending = pending[:0]
			}
		case <-t.C:
			if len(pending) > 0 {
				a.resolve(pending)
				pending = pending[:0]
			}
		case done := <-a.flush:
			// Serve every session waiting at this moment with one round:
			// their records were queued before they asked.
			waiting := []chan struct{}{done}
			for more := true; more; {
				select {
				case d := <-a.flush:
					waiting = append(waiting, d)
				default:
					more = false
				}
			}
			drainInput()
			if len(pending) > 0 {
				a.resolve(pending)
				pending = pending[:0]
			}
			for _, d := range waiting {
				close(d)
			}
		}
	}
}

func (a *auditor) resolve(recs []auditRecord) {
	var holes []natrules.Hole
	var idx []int
	for i, r := range recs {
		if r.hasHole {
			holes = append(holes, r.hole)
			idx = append(idx, i)
		}
	}
	bytes := make([]uint64, len(recs))
	counted := false
	if len(holes) > 0 && a.counter != nil {
		got, err := a.counter(holes)
		if err != nil {
			a.log.Warn("transfer byte counts unavailable", "err", err)
		} else {
			counted = true
			for j, i := range idx {
				bytes[i] = got[j]
			}
		}
	}
	for i, r := range recs {
		a.write(r, bytes[i], counted && r.hasHole)
	}
}

func (a *auditor) write(r auditRecord, bytes uint64, counted bool) {
	result := "ok"
	if r.code >= 400 {
		result = "failed"
	}
	if a.metrics != nil {
		a.metrics.Transfers.WithLabelValues(r.command, result).Inc()
		a.metrics.TransferBytes.Add(float64(bytes))
	}
	attrs := []any{
		"session", r.session, "client", r.client.String(), "server", r.server.String(), "mode", r.mode,
		"command", r.command, "file", r.file, "code", r.code, "result", result,
		"duration_ms", r.end.Sub(r.start).Milliseconds(),
	}
	if counted {
		attrs = append(attrs, "bytes", bytes)
	}
	if r.hasHole {
		attrs = append(attrs, "data_from", r.hole.From.String(), "data_to", r.hole.To.String())
	}
	a.log.Info("transfer", attrs...)
}
