package tests

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// A host that floods bare LFs (issue 14, item 5): its refusals are all
// counted but logged a bounded number of times per session, and another
// client's transfers go through meanwhile. Timings are in
// docs/limits-and-defaults.md (go run ./tests/floodbench), not here.
func TestFlood(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	const nfiles = 100
	want := map[string]string{}
	if err := os.MkdirAll(filepath.Join(b.FTPRoot, "pub/files"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range nfiles {
		name := fmt.Sprintf("f%03d.bin", i)
		h, err := b.WriteFile("pub/files/"+name, 1024)
		if err != nil {
			t.Fatal(err)
		}
		want[name] = h
	}
	proc := startFtpalg(t, b, "FTPALG_CAPTURE_IFACES=lan0", "FTPALG_LOG_LEVEL=info")
	static := snapshot(t, b)
	const malformed = `ftpalg_inputs_refused_total{reason="malformed"}`

	t.Run("bare LFs: every refusal counted, a few logged per session", func(t *testing.T) {
		before := metricsOf(t, b, b.Gateway)[malformed]
		// Runs of ten, each closed by a NOOP, so that no limit on bad
		// lines in a row ends the session before the log is tested.
		const rounds, run = 5000, 10
		answered := lfRuns(t, b, rounds, run)
		waitMetric(t, b, activeSessions, 0, 10*time.Second)
		delta := metricsOf(t, b, b.Gateway)[malformed] - before
		logs := refusalLogs(t, proc.Out.String(), bed.Attacker4)
		if len(logs) == 0 {
			t.Fatalf("no session of the attacker in the log:\n%s", tail(proc.Out.String(), 40))
		}
		accounted := 0
		for id, s := range logs {
			// Five one by one, then a summary per 10 s and one at the end.
			if limit := 5 + 1 + int(s.duration/(10*time.Second)); s.lines > limit {
				t.Fatalf("session %s: %d log lines about refused input, want at most %d", id, s.lines, limit)
			}
			accounted += s.logged + s.suppressed
		}
		if delta != rounds*run || float64(accounted) != delta || answered != rounds*run {
			t.Fatalf("%d bare LFs answered %d times; %s grew by %v; the log accounts for %d refusals",
				rounds*run, answered, malformed, delta, accounted)
		}
		assertClean(t, b, static)
		t.Logf("ok: %d bare LFs refused, counted and accounted for in the log; log lines per session: %v", int(delta), logs)
	})

	t.Run("another client's 100 downloads while LFs flood on 16 connections", func(t *testing.T) {
		fl := floodLF(t, b, 16)
		if err := b.WaitFor(20*time.Second, func() bool { return fl.answered.Load() >= 1000 }, "the flood under way"); err != nil {
			fl.wait(t)
			t.Fatal(err)
		}
		out := filepath.Join(b.Dir, "mirror")
		start := time.Now()
		res, err := b.Lftp(b.Client, bed.Server4, true, "mirror pub/files "+out)
		took := time.Since(start)
		flooded := fl.answered.Load()
		fl.wait(t)
		if err != nil {
			t.Fatalf("victim's mirror after %s: %v\n%s", took, err, res)
		}
		for name, h := range want {
			got, err := bed.HashFile(filepath.Join(out, name))
			if err != nil || got != h {
				t.Fatalf("%s: sha256 %s %v, want %s", name, got, err, h)
			}
		}
		if flooded == 0 {
			t.Fatal("the flood never got an answer: nothing tested")
		}
		waitMetric(t, b, activeSessions, 0, 10*time.Second)
		assertClean(t, b, static)
		t.Logf("ok: %d files byte-exact in %s while the attacker got %d answers to bare LFs", nfiles, took.Round(time.Millisecond), flooded)
	})
}

// lfRuns sends rounds of run bare LFs and a NOOP from the attacker host,
// one round at a time, and returns how many LFs were answered with the
// gateway's 500 (the NOOP's reply may overtake them).
func lfRuns(t *testing.T, b *bed.Bed, rounds, run int) int {
	t.Helper()
	c, err := b.Dial(b.Attacker, netip.AddrPortFrom(bed.Server4, 21), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f := newFTPConn(c)
	if code, text, err := f.reply(); err != nil || code != 220 {
		t.Fatalf("greeting: %d %q %v", code, text, err)
	}
	round := strings.Repeat("\n", run) + "NOOP\r\n"
	answered := 0
	for i := range rounds {
		if err := f.send(round); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		for other := 0; other < 1; {
			code, text, err := f.reply()
			switch {
			case err != nil:
				t.Fatalf("round %d: %v", i, err)
			case text == msgBadEOL:
				answered++
			case code == 421:
				t.Fatalf("round %d: session ended: %q", i, text)
			default:
				other++
			}
		}
	}
	return answered
}

// lfFlood is a running bare-LF flood from the attacker host.
type lfFlood struct {
	sent, answered atomic.Int64
	stop           chan struct{}
	wg             sync.WaitGroup
	mu             sync.Mutex
	err            error
}

// floodLF floods from conns connections at once, each reconnecting when
// the gateway ends its session, until wait is called.
func floodLF(t *testing.T, b *bed.Bed, conns int) *lfFlood {
	t.Helper()
	f := &lfFlood{stop: make(chan struct{})}
	for range conns {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			if err := f.run(b); err != nil {
				f.mu.Lock()
				f.err = errors.Join(f.err, err)
				f.mu.Unlock()
			}
		}()
	}
	return f
}

// wait stops the flood, waits for its connections to close, and fails the
// test if one could not be made.
func (f *lfFlood) wait(t *testing.T) {
	t.Helper()
	close(f.stop)
	f.wg.Wait()
	if f.err != nil {
		t.Fatal(f.err)
	}
}

func (f *lfFlood) stopped() bool {
	select {
	case <-f.stop:
		return true
	default:
		return false
	}
}

func (f *lfFlood) run(b *bed.Bed) error {
	chunk := bytes.Repeat([]byte("\n"), 16<<10)
	answer := []byte(msgBadEOL)
	for !f.stopped() {
		c, err := b.Dial(b.Attacker, netip.AddrPortFrom(bed.Server4, 21), 5*time.Second)
		if err != nil {
			return fmt.Errorf("attacker dial: %w", err)
		}
		readDone := make(chan struct{})
		go func() {
			// Count the answers until the session ends or the flood stops.
			defer close(readDone)
			r := bufio.NewReaderSize(c, 64<<10)
			for {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				line, err := r.ReadSlice('\n')
				if err != nil || f.stopped() {
					return
				}
				if bytes.Equal(line, answer) {
					f.answered.Add(1)
				}
			}
		}()
	send:
		for !f.stopped() {
			select {
			case <-readDone:
				break send // the gateway ended the session: reconnect
			default:
			}
			c.SetWriteDeadline(time.Now().Add(time.Second))
			n, err := c.Write(chunk)
			f.sent.Add(int64(n))
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
		}
		c.Close()
		<-readDone
	}
	return nil
}

// refusalSession is what one session logged about refused input.
type refusalSession struct {
	lines, logged, suppressed int
	duration                  time.Duration
}

func (s refusalSession) String() string {
	return fmt.Sprintf("%d lines (%d refusals one by one, %d summed up) in %s", s.lines, s.logged, s.suppressed, s.duration.Round(time.Millisecond))
}

var (
	logSession  = regexp.MustCompile(` session=(\d+) client=(\S+) `)
	logSummed   = regexp.MustCompile(` by_reason\.malformed=(\d+)`)
	logDuration = regexp.MustCompile(` duration=(\S+) `)
)

// refusalLogs reads the daemon's log (text format) and returns, per session
// of a client at addr, its lines about refused malformed input.
func refusalLogs(t *testing.T, log string, addr netip.Addr) map[string]refusalSession {
	t.Helper()
	out := map[string]refusalSession{}
	for _, l := range strings.Split(log, "\n") {
		m := logSession.FindStringSubmatch(l)
		if m == nil || netip.MustParseAddrPort(m[2]).Addr() != addr {
			continue
		}
		s := out[m[1]]
		switch {
		case strings.Contains(l, `msg="input refused" `):
			s.lines++
			if strings.Contains(l, " reason=malformed ") {
				s.logged++
			}
		case strings.Contains(l, `msg="input refused, `):
			s.lines++
			if sm := logSummed.FindStringSubmatch(l); sm != nil {
				n, err := strconv.Atoi(sm[1])
				if err != nil {
					t.Fatalf("log line %q: count: %v", l, err)
				}
				s.suppressed += n
			}
		case strings.Contains(l, `msg="session ended"`):
			if d := logDuration.FindStringSubmatch(l); d != nil {
				var err error
				if s.duration, err = time.ParseDuration(d[1]); err != nil {
					t.Fatalf("log line %q: duration: %v", l, err)
				}
			}
		}
		out[m[1]] = s
	}
	return out
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}
