package proxy

import (
	"bytes"
	"context"
	"encoding/json"
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
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
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
	cases := []struct {
		name      string
		records   int
		wantBytes int // records logged with bytes
		maxCalls  int
	}{
		{"one", 1, 1, 1},
		{"a batch in few lookups", 100, 100, 2},
		{"past the queue bound: logged at once, without bytes", auditMaxQueue + 10, auditMaxQueue, auditMaxQueue/auditBatch + 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			calls = 0
			var sink syncBuffer
			a := newAuditor(counter, slog.New(slog.NewJSONHandler(&sink, nil)), nil)
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
			if calls > c.maxCalls {
				t.Errorf("%d counter calls, want at most %d", calls, c.maxCalls)
			}
		})
	}
}
