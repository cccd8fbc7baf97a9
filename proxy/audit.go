package proxy

import (
	"bytes"
	"context"
	"io"
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
	// relay, if set, is why the data was relayed (RelayFamily, ...):
	// relayBytes is then the count, from the relay, not conntrack.
	// relayID is the alg hole of the relay, until the count is known.
	relay      string
	relayBytes uint64
	relayID    uint64
	// relayFailure: the relay did not carry the data whole (its client
	// side refused, the other end unreachable, cut early); the transfer
	// failed whatever the server replied.
	relayFailure string
}

// relayed returns r with the relay's reason, byte count and failure.
func (r auditRecord) relayed(reason string, n int64, failure string) auditRecord {
	r.relay, r.relayBytes, r.relayFailure = reason, uint64(max(n, 0)), failure
	return r
}

// auditor writes one log line per data transfer. Records wait in a list
// and are resolved (byte counts from conntrack) in rounds, by one goroutine
// on a timer: adding a record wakes nobody, which matters when a transfer
// ends every millisecond. A session that ends asks for a round first,
// because its cleanup deletes the flows that hold the counters.
//
// With an output of its own, the lines of a chunk of records (see
// resolve) are formatted into a buffer and written with one write: when a
// transfer ends every millisecond, a write per line is a system call and
// a wake-up of the log's reader (journald, the container runtime) each.
type auditor struct {
	mu      sync.Mutex
	pending []auditRecord
	full    chan struct{} // nudges a round when pending reaches auditBatch
	flush   chan chan struct{}
	counter FlowCounter
	log     *slog.Logger // lines written one by one
	metrics *Metrics

	attrs []slog.Attr // the round goroutine's scratch for one line

	// Batching, used by the round goroutine only; batch nil: off.
	batch *slog.Logger // formats into buf
	buf   bytes.Buffer
	out   io.Writer
}

const (
	auditBatch    = 512
	auditMaxQueue = 4096
	auditInterval = 250 * time.Millisecond
)

// LogFactory builds a logger, formatted like the daemon's, that writes to w.
type LogFactory func(w io.Writer) *slog.Logger

// newAuditor writes the lines through log, one by one; with newLog and out
// it writes each chunk's lines (see resolve) to out in one write, and the
// rare line outside a round through newLog(out).
func newAuditor(counter FlowCounter, log *slog.Logger, m *Metrics, newLog LogFactory, out io.Writer) *auditor {
	a := &auditor{full: make(chan struct{}, 1), flush: make(chan chan struct{}), counter: counter, log: log, metrics: m}
	if newLog != nil && out != nil {
		a.log = newLog(out)
		a.batch = newLog(&a.buf)
		a.out = out
	}
	return a
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
		a.write(a.log, nil, r, 0, false)
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

// resolve writes the records, a chunk at a time. ftpalg runs its
// goroutines on one CPU, and a goroutine that makes only short system
// calls keeps it: a round of a thousand conntrack lookups would hold every
// session's next line for milliseconds. Between chunks the auditor sleeps,
// which lets the scheduler poll the network and relay what has arrived.
func (a *auditor) resolve(recs []auditRecord) {
	for start := 0; start < len(recs); start += auditChunk {
		if start > 0 {
			time.Sleep(auditPause)
		}
		a.resolveChunk(recs[start:min(start+auditChunk, len(recs))])
	}
}

const (
	auditChunk = 32 // about a millisecond of lookups and formatting
	auditPause = 50 * time.Microsecond
)

func (a *auditor) resolveChunk(recs []auditRecord) {
	var holes []natrules.Hole
	var idx []int
	for i, r := range recs {
		if r.hasHole && r.relay == "" {
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
	log := a.log
	if a.batch != nil {
		log = a.batch
	}
	for i, r := range recs {
		n, ok := bytes[i], counted && r.hasHole
		if r.relay != "" {
			n, ok = r.relayBytes, true
		}
		a.attrs = a.write(log, a.attrs[:0], r, n, ok)
	}
	if a.batch != nil {
		a.flushBuf()
	}
}

func (a *auditor) flushBuf() {
	if a.buf.Len() == 0 {
		return
	}
	if _, err := a.out.Write(a.buf.Bytes()); err != nil {
		a.log.Warn("transfer log lines not written", "bytes", a.buf.Len(), "err", err)
	}
	a.buf.Reset()
}

// write logs one transfer through log; attrs is scratch space, returned
// for reuse.
func (a *auditor) write(log *slog.Logger, attrs []slog.Attr, r auditRecord, bytes uint64, counted bool) []slog.Attr {
	result := "ok"
	if r.code >= 400 || r.relayFailure != "" {
		result = "failed"
	}
	if a.metrics != nil {
		a.metrics.Transfers.WithLabelValues(r.command, result).Inc()
		a.metrics.TransferBytes.Add(float64(bytes))
	}
	attrs = append(attrs,
		slog.Uint64("session", r.session), slog.String("client", r.client.String()), slog.String("server", r.server.String()),
		slog.String("mode", r.mode), slog.String("command", r.command), slog.String("file", r.file),
		slog.Int("code", r.code), slog.String("result", result),
		slog.Int64("duration_ms", r.end.Sub(r.start).Milliseconds()),
	)
	if counted {
		attrs = append(attrs, slog.Uint64("bytes", bytes))
	}
	if r.hasHole {
		attrs = append(attrs, slog.String("data_from", r.hole.From.String()), slog.String("data_to", r.hole.To.String()))
	}
	if r.relay != "" {
		attrs = append(attrs, slog.String("relayed", r.relay))
	}
	if r.relayFailure != "" {
		attrs = append(attrs, slog.String("relay_failure", r.relayFailure))
	}
	log.LogAttrs(context.Background(), slog.LevelInfo, "transfer", attrs...)
	return attrs
}
