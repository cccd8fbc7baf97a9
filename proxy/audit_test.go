package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/natrules"
)

// syncBuffer is a log sink safe for the auditor goroutine.
type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func TestAuditorRounds(t *testing.T) {
	var calls int
	var mu sync.Mutex
	counter := func(holes []natrules.Hole) ([]uint64, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		out := make([]uint64, len(holes))
		for i, h := range holes {
			out[i] = uint64(h.To.Port()) // recognisable per record
		}
		return out, nil
	}
	cases := []auditCase{
		{"one", 1, 1, 1, 1},
		{"a batch in few lookups", 100, 100, chunks(100) + 1, chunks(100) + 1},
		// The 10 past the bound are written at once, one write each.
		{"past the queue bound: logged at once, without bytes", auditMaxQueue + 10, auditMaxQueue, chunks(auditMaxQueue) + 2, 10 + chunks(auditMaxQueue) + 2},
	}
	jsonLog := func(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }
	for _, batched := range []bool{false, true} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/batched=%v", c.name, batched), func(t *testing.T) {
				mu.Lock()
				calls = 0
				mu.Unlock()
				var sink syncBuffer
				a := newAuditor(counter, jsonLog(&sink), nil, nil, nil)
				if batched {
					a = newAuditor(counter, nil, nil, jsonLog, &sink)
				}
				c.run(t, a, &sink, batched)
				mu.Lock()
				defer mu.Unlock()
				if calls > c.maxCalls {
					t.Errorf("%d counter calls, want at most %d", calls, c.maxCalls)
				}
			})
		}
	}
}

// chunks is how many lookups (and batched writes) n records take.
func chunks(n int) int { return (n + auditChunk - 1) / auditChunk }

type auditCase struct {
	name      string
	records   int
	wantBytes int // records logged with bytes
	maxCalls  int // of the counter
	maxWrites int // batched: writes that may carry the lines
}

// run queues the records, lets the auditor write them and checks the lines.
func (c auditCase) run(t *testing.T, a *auditor, sink *syncBuffer, batched bool) {
	// Queue everything before the auditor runs, as a burst of
	// sessions would between two rounds.
	for i := range c.records {
		a.add(auditRecord{
			session: uint64(i), command: "RETR", file: "f", code: 226, hasHole: true,
			hole:  natrules.Hole{From: netip.MustParseAddr("192.0.2.10"), To: netip.AddrPortFrom(netip.MustParseAddr("198.51.100.20"), uint16(1000+i%1000))},
			start: time.Now(), end: time.Now(),
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.run(ctx); close(done) }()
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	a.sync(sctx)
	scancel()
	cancel()
	<-done
	lines := sink.lines(t)
	if len(lines) != c.records {
		t.Fatalf("%d lines for %d records", len(lines), c.records)
	}
	withBytes := 0
	for _, l := range lines {
		if b, ok := l["bytes"].(float64); ok {
			withBytes++
			if want := 1000 + int(l["session"].(float64))%1000; int(b) != want {
				t.Fatalf("record %v: bytes %v, want %d", l["session"], b, want)
			}
		}
	}
	if withBytes != c.wantBytes {
		t.Errorf("%d records with bytes, want %d", withBytes, c.wantBytes)
	}
	if batched && sink.writes > c.maxWrites {
		t.Errorf("%d writes for %d lines, want at most %d", sink.writes, c.records, c.maxWrites)
	}
	if !batched && sink.writes != c.records {
		t.Errorf("%d writes for %d lines unbatched", sink.writes, c.records)
	}
}

// A relayed transfer whose relay failed is logged failed whatever the
// server replied (a 226 can pass before the client's TLS handshake fails).
func TestAuditRelayFailure(t *testing.T) {
	for _, tc := range []struct {
		name    string
		code    int
		failure string
		want    string
	}{
		{"relayed whole", 226, "", "ok"},
		{"client side refused after a 226", 226, "client_refused", "failed"},
		{"cut early", 226, "ended_early", "failed"},
		{"server failed", 426, "", "failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sink syncBuffer
			a := newAuditor(nil, slog.New(slog.NewJSONHandler(&sink, nil)), nil, nil, nil)
			r := auditRecord{command: "RETR", code: tc.code, start: time.Now(), end: time.Now()}
			a.write(a.log, nil, r.relayed(RelayTLS, 0, tc.failure), 0, true)
			lines := sink.lines(t)
			if len(lines) != 1 {
				t.Fatalf("%d lines, want 1", len(lines))
			}
			if got := lines[0]["result"]; got != tc.want {
				t.Errorf("result %v, want %s", got, tc.want)
			}
			if got, _ := lines[0]["relay_failure"].(string); got != tc.failure {
				t.Errorf("relay_failure %q, want %q", got, tc.failure)
			}
		})
	}
}
