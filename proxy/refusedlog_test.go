package proxy

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRefusedLogThrottle(t *testing.T) {
	var out syncBuf
	r := newRefusedLog(slog.New(slog.NewTextHandler(&out, nil)))
	var scheduled []time.Duration
	r.after = func(d time.Duration, _ func()) { scheduled = append(scheduled, d) }
	t0 := time.Unix(1_000_000, 0)
	for i, st := range []struct {
		at    time.Duration
		label string
		allow bool
	}{
		{0, "limit", true}, {time.Second, "client_limit", true},
	} {
		if got := r.allow(t0.Add(st.at), st.label); got != st.allow {
			t.Fatalf("step %d: allow %v, want %v", i, got, st.allow)
		}
	}
	for i := 2; i < refusedBurst; i++ {
		if !r.allow(t0.Add(2*time.Second), "limit") {
			t.Fatalf("refusal %d of the burst not logged", i+1)
		}
	}
	// Past the burst: counted, one summary scheduled for the window's end.
	for i := range 25 {
		label := "limit"
		if i%5 == 0 {
			label = "login_blocked"
		}
		if r.allow(t0.Add(3*time.Second), label) {
			t.Fatalf("refusal %d past the burst logged", i)
		}
	}
	if len(scheduled) != 1 || scheduled[0] != 7*time.Second {
		t.Fatalf("summaries scheduled %v, want one in 7s", scheduled)
	}
	r.flush()
	if got := out.String(); !strings.Contains(got, "sessions refused, not logged one by one") ||
		!strings.Contains(got, "suppressed=25 by_reason.limit=20 by_reason.login_blocked=5") {
		t.Fatalf("summary: %q", got)
	}
	r.flush() // nothing more to say
	if n := strings.Count(out.String(), "\n"); n != 1 {
		t.Fatalf("%d lines after a second flush, want 1", n)
	}
	// A new window logs again.
	if !r.allow(t0.Add(refusedEvery+time.Second), "limit") {
		t.Fatal("first refusal of a new window not logged")
	}
}

// A flood against the global limit writes a bounded number of lines; the
// metric counts every refusal, and Close logs the summary.
func TestRefusedFloodLogBounded(t *testing.T) {
	srv := newFakeFTP(t)
	var out syncBuf
	m := NewMetrics(nil)
	var s *Server
	pa, _ := startProxyLogged(t, srv.addr(), func(c *Config) { c.MaxSessions, c.Metrics = 1, m }, &s, &out)
	held := dial(t, pa)
	if r := held.reply(t); r != "220 fake FTP" {
		t.Fatalf("greeting %q", r)
	}
	const flood = 40
	for range flood {
		c := dial(t, pa)
		if r := c.reply(t); !strings.HasPrefix(r, "421 ") {
			t.Fatalf("refused session: %q, want 421", r)
		}
		c.c.Close()
	}
	if got := counterValue(t, m.SessionsRefused.WithLabelValues("limit")); got != flood {
		t.Fatalf("refused{limit} = %v, want %d", got, flood)
	}
	if n := strings.Count(out.String(), "session refused: limit reached"); n != refusedBurst {
		t.Fatalf("%d refusal lines for %d refusals, want %d\n%s", n, flood, refusedBurst, out.String())
	}
	held.c.Close()
	s.Close() // the summary; the cleanup's second Close has nothing left to log
	if !strings.Contains(out.String(), "suppressed=30 by_reason.limit=30") {
		t.Fatalf("no summary of the %d suppressed lines:\n%s", flood-refusedBurst, out.String())
	}
}
