package proxy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/natrules/natrulestest"
)

func TestRefusalLog(t *testing.T) {
	t0 := time.Unix(1000, 0)
	mal := alg.Action{Verdict: alg.Answer, Refusal: alg.RefusedMalformed}
	st := alg.Action{Verdict: alg.Answer, Refusal: alg.RefusedState}
	for _, tc := range []struct {
		name  string
		steps []struct {
			at time.Duration
			a  alg.Action
		}
		want    []string // "one <reason>" or "sum <reason>=n ..."; final flush last
		flushed string
	}{
		{
			name: "burst logged one by one, nothing left",
			steps: []struct {
				at time.Duration
				a  alg.Action
			}{{0, mal}, {0, mal}, {0, st}, {0, mal}, {0, mal}},
			want: []string{"one malformed", "one malformed", "one state", "one malformed", "one malformed"},
		},
		{
			name: "past the burst: counted, summed up per interval and at the end",
			steps: []struct {
				at time.Duration
				a  alg.Action
			}{{0, mal}, {0, mal}, {0, mal}, {0, mal}, {0, mal}, {time.Second, mal}, {2 * time.Second, st},
				{refusalEvery, mal}, {refusalEvery + time.Second, mal}, {refusalEvery + 2*time.Second, mal}},
			want:    []string{"one malformed", "one malformed", "one malformed", "one malformed", "one malformed", "sum malformed=3 state=1"},
			flushed: "sum malformed=1",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r refusalLog
			var got []string
			for _, s := range tc.steps {
				if n, ok := r.note(t0.Add(s.at), alg.FromClient, s.a); ok {
					got = append(got, noteString(n))
				}
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("logged %q, want %q", got, tc.want)
			}
			n, ok := r.flush()
			if f := noteString(n); ok != (tc.flushed != "") || (ok && f != tc.flushed) {
				t.Fatalf("at the end: %q (%v), want %q", f, ok, tc.flushed)
			}
		})
	}
}

func noteString(n refusalNote) string {
	if n.summary == nil {
		return "one " + string(n.reason)
	}
	s := "sum"
	for _, r := range []alg.Refusal{alg.RefusedMalformed, alg.RefusedState} {
		if c := n.summary[r]; c > 0 {
			s += " " + string(r) + "=" + strconv.Itoa(c)
		}
	}
	return s
}

// syncBuf is a log destination safe for the session goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveTest runs a forward-mode server relaying to up and returns it with
// its listening address; stop ends it (Drain with a 2 s grace).
func serveTest(t *testing.T, up netip.AddrPort, cfg Config, log *slog.Logger) (*Server, string, func()) {
	t.Helper()
	cfg.Policy = alg.DefaultPolicy()
	cfg.Policy.AllowLoopbackServer = true
	cfg.PortLo, cfg.PortHi = 50000, 50009
	s, err := New(cfg, &natrulestest.Fake{}, log)
	if err != nil {
		t.Fatal(err)
	}
	s.originalDst = func(*net.TCPConn) (netip.AddrPort, error) { return up, nil }
	empty := map[netip.Addr]struct{}{} // loopback is "local"; the test needs it not to be
	s.local.set.Store(&empty)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { s.Serve(ctx, ln); close(served) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-served
			gctx, gcancel := context.WithTimeout(context.Background(), 2*time.Second)
			s.Drain(gctx)
			gcancel()
			s.Close()
		})
	}
	t.Cleanup(stop)
	return s, ln.Addr().String(), stop
}

// Refused lines by the thousand: each is refused and counted, five are
// logged, and the rest is summed up in one line when the session ends.
// Runs of ten, each followed by a NOOP, so no run-length limit ends it.
func TestRefusalFloodLogged(t *testing.T) {
	srv := newFakeFTP(t)
	var logs syncBuf
	s, addr, _ := serveTest(t, srv.addr(), Config{}, slog.New(slog.NewTextHandler(&logs, nil)))
	refused := s.metrics.Refused.WithLabelValues(string(alg.RefusedMalformed))
	before := counterValue(t, refused)
	c := dial(t, netip.MustParseAddrPort(addr))
	if r := c.reply(t); r != "220 fake FTP" {
		t.Fatalf("greeting %q", r)
	}
	const rounds, run = 300, 10
	for i := range rounds {
		c.send(t, strings.Repeat("\n", run)+"NOOP\r\n")
		// The NOOP's reply may overtake the local answers: count them.
		got := map[string]int{}
		for range run + 1 {
			got[c.reply(t)]++
		}
		if got["500 Syntax error: lines must end in CRLF."] != run || got["200 OK NOOP."] != 1 {
			t.Fatalf("round %d: replies %v", i, got)
		}
	}
	c.c.Close()
	if err := waitUntil(5*time.Second, func() bool { return s.Active() == 0 }); err != nil {
		t.Fatal(err)
	}
	const n = rounds * run
	if d := counterValue(t, refused) - before; d != n {
		t.Fatalf("ftpalg_inputs_refused_total{reason=malformed} grew by %v, want %d", d, n)
	}
	out := logs.String()
	if c := strings.Count(out, `msg="input refused" `); c != refusalBurst {
		t.Fatalf("%d refusals logged one by one, want %d:\n%s", c, refusalBurst, out)
	}
	sum := `msg="input refused, not logged one by one" session=1 client=`
	if strings.Count(out, sum) != 1 || !strings.Contains(out, fmt.Sprintf(" suppressed=%d by_reason.malformed=%d\n", n-refusalBurst, n-refusalBurst)) {
		t.Fatalf("want one summary of %d malformed lines:\n%s", n-refusalBurst, out)
	}
}

func waitUntil(d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return context.DeadlineExceeded
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}
