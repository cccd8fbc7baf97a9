package proxy

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// A read armed lazily still waits the full idle time from its own start,
// not from when the deadline was last moved.
func TestIdleDeadlineExact(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	w, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const idle = 320 * time.Millisecond // slack 20 ms
	d := newIdleDeadline(c.(*net.TCPConn), idle)
	d.arm(time.Now())
	time.Sleep(15 * time.Millisecond) // within the slack: the deadline stays
	start := time.Now()
	d.arm(start)
	if got := d.armed.Sub(start); got >= idle {
		t.Fatalf("deadline moved within the slack: %v ahead", got)
	}
	buf := make([]byte, 16)
	early := 0
	for {
		_, err := c.Read(buf)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %v, want the deadline", err)
		}
		if !d.early(time.Now()) {
			break
		}
		early++
	}
	if waited := time.Since(start); waited < idle {
		t.Fatalf("read ended after %v, want at least %v", waited, idle)
	}
	if early != 1 {
		t.Fatalf("deadline re-set %d times, want once (it was %v early)", early, idle-d.armed.Sub(start))
	}
	// Past the slack, arm moves the deadline at once.
	later := time.Now().Add(time.Second)
	d.arm(later)
	if !d.armed.Equal(later.Add(idle)) {
		t.Fatalf("armed %v, want %v", d.armed, later.Add(idle))
	}
}
