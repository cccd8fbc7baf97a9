package proxy

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
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

// auditor writes one log line per data transfer. Records wait in a list
// and are resolved (byte counts from conntrack) in rounds, by one goroutine
// on a timer: adding a record wakes nobody, which matters when a transfer
// ends every millisecond. A session that ends asks for a round first,
// because its cleanup deletes the flows that hold the counters.
type auditor struct {
	mu      sync.Mutex
	pending []auditRecord
	full    chan struct{} // nudges a round when pending reaches auditBatch
	flush   chan chan struct{}
	counter FlowCounter
	log     *slog.Logger
	metrics *Metrics
}

const (
	auditBatch    = 512
	auditMaxQueue = 4096
	auditInterval = 250 * time.Millisecond
)

func newAuditor(counter FlowCounter, log *slog.Logger, m *Metrics) *auditor {
	return &auditor{full: make(chan struct{}, 1), flush: make(chan chan struct{}), counter: counter, log: log, metrics: m}
}

// add queues a record; it never blocks a session (a full queue logs the
// transfer at once, without bytes).
func (a *auditor) add(r auditRecord) {
	a.mu.Lock()
	n := len(a.pending)
	if n < auditMaxQueue {
		a.pending = append(a.pending, r)
	}
	a.mu.Unlock()
	switch {
	case n >= auditMaxQueue:
		a.write(r, 0, false)
	case n+1 == auditBatch:
		select {
		case a.full <- struct{}{}:
		default:
		}
	}
}

func (a *auditor) take() []auditRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	recs := a.pending
	a.pending = nil
	return recs
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
	t := time.NewTicker(auditInterval)
	defer t.Stop()
	round := func() {
		if recs := a.take(); len(recs) > 0 {
			a.resolve(recs)
		}
	}
	for {
		select {
		case <-ctx.Done():
			round()
			return
		case <-a.full:
			round()
		case <-t.C:
			round()
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
			round()
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
