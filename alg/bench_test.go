package alg

import (
	"testing"
)

// BenchmarkFeedForward measures the line pump in the steady state: a logged
// in session relaying ordinary commands and replies unchanged, arriving in
// 4 KiB-ish chunks of pipelined lines. One op is one line.
func BenchmarkFeedForward(b *testing.B) {
	x := fuzzSetup(b, cfgLogin)
	cmds := []byte("CWD /pub/some/dir\r\nTYPE I\r\nSIZE file.bin\r\nMDTM file.bin\r\n")
	reps := []byte("250 Directory successfully changed.\r\n200 Switching to Binary mode.\r\n213 1048576\r\n213 20240101000000\r\n")
	const perChunk = 4
	emit := func(a Action) error {
		if a.Verdict != Forward {
			b.Fatalf("unexpected %s %q", a.Verdict, a.Output)
		}
		return nil
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 2 * perChunk {
		if err := x.s.Feed(FromClient, cmds, emit); err != nil {
			b.Fatal(err)
		}
		if err := x.s.Feed(FromServer, reps, emit); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkFeedSplit feeds one line at a time in two pieces, the worst case
// for buffering.
func BenchmarkFeedSplit(b *testing.B) {
	x := fuzzSetup(b, cfgLogin)
	emit := func(Action) error { return nil }
	c1, c2 := []byte("RETR some/long/"), []byte("path/file.bin\r\n")
	r := []byte("550 No such file.\r\n")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 2 {
		_ = x.s.Feed(FromClient, c1, emit)
		_ = x.s.Feed(FromClient, c2, emit)
		_ = x.s.Feed(FromServer, r, emit)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// TestForwardZeroAlloc pins the zero-allocation guarantee for relayed lines.
func TestForwardZeroAlloc(t *testing.T) {
	x := fuzzSetup(t, cfgLogin)
	cmd, rep := []byte("NOOP\r\n"), []byte("200 NOOP ok.\r\n")
	emit := func(Action) error { return nil }
	n := testing.AllocsPerRun(1000, func() {
		_ = x.s.Feed(FromClient, cmd, emit)
		_ = x.s.Feed(FromServer, rep, emit)
	})
	if n != 0 {
		t.Fatalf("%v allocations per forwarded line pair", n)
	}
}
