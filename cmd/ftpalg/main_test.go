package main

import (
	"bytes"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// trickle writes a byte at a time and yields between bytes, as a pipe
// does when it takes a large write in pieces while its reader lags.
type trickle struct {
	mu  sync.Mutex
	out []byte
}

func (t *trickle) Write(p []byte) (int, error) {
	for _, c := range p {
		t.mu.Lock()
		t.out = append(t.out, c)
		t.mu.Unlock()
		runtime.Gosched()
	}
	return len(p), nil
}

func TestSyncWriterKeepsWritesWhole(t *testing.T) {
	tr := &trickle{}
	w := &syncWriter{w: tr}
	const n, size = 8, 2048
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			w.Write(bytes.Repeat([]byte{byte('a' + i)}, size))
		})
	}
	wg.Wait()
	if len(tr.out) != n*size {
		t.Fatalf("wrote %d bytes, want %d", len(tr.out), n*size)
	}
	for i := 0; i < len(tr.out); i += size {
		run := string(tr.out[i : i+size])
		if strings.Count(run, run[:1]) != size {
			t.Fatalf("write at %d was split: %q...", i, run[:64])
		}
	}
}
