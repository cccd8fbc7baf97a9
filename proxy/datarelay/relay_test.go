package datarelay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns two connected loopback TCP connections.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   *net.TCPConn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.AcceptTCP()
		ch <- res{c, err}
	}()
	d, err := net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { d.Close(); r.c.Close() })
	return d, r.c
}

// buffered hides *net.TCPConn, as a *tls.Conn would: the relay must take
// its buffered path and still half-close.
type buffered struct{ net.Conn }

func (b buffered) CloseWrite() error { return b.Conn.(*net.TCPConn).CloseWrite() }

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

type relayResult struct {
	st  Stats
	err error
}

// TestRelayBothWaysHalfClose: a sends X and half-closes; b must read all of
// X and then EOF while its own direction is still open; b answers Y and
// half-closes; a reads Y then EOF. Counts are exact, in both paths.
func TestRelayBothWaysHalfClose(t *testing.T) {
	for _, tc := range []struct {
		name    string
		wrap    bool
		spliced bool
	}{{"spliced", false, true}, {"buffered", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			a0, a1 := tcpPair(t)
			b0, b1 := tcpPair(t)
			var ra, rb net.Conn = a1, b1
			if tc.wrap {
				ra = buffered{a1}
			}
			done := make(chan relayResult, 1)
			go func() {
				st, err := Relay(t.Context(), ra, rb, Limits{Idle: 5 * time.Second, Buffer: 4096})
				done <- relayResult{st, err}
			}()
			x, y := random(t, 3<<20+17), random(t, 100<<10+3)
			werr := make(chan error, 1)
			go func() {
				_, err := a0.Write(x)
				if err == nil {
					err = a0.CloseWrite()
				}
				werr <- err
			}()
			got, err := io.ReadAll(b0)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, x) {
				t.Fatalf("b read %d bytes, want %d identical", len(got), len(x))
			}
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
			// b's direction still works after a's half-close.
			if _, err := b0.Write(y); err != nil {
				t.Fatal(err)
			}
			if err := b0.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err = io.ReadAll(a0)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, y) {
				t.Fatalf("a read %d bytes, want %d identical", len(got), len(y))
			}
			r := <-done
			if r.err != nil {
				t.Fatalf("relay: %v", r.err)
			}
			if r.st.AToB != int64(len(x)) || r.st.BToA != int64(len(y)) || r.st.Spliced != tc.spliced {
				t.Fatalf("stats %+v, want AToB %d BToA %d Spliced %v", r.st, len(x), len(y), tc.spliced)
			}
		})
	}
}

// TestRelayEnds: each limit ends a relay with its own cause and closes
// both connections (the peers read EOF).
func TestRelayEnds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		lim    Limits
		cancel bool
		want   error
	}{
		{"idle", Limits{Idle: 200 * time.Millisecond}, false, ErrIdle},
		{"max", Limits{Max: 300 * time.Millisecond}, false, context.DeadlineExceeded},
		{"cancel", Limits{}, true, context.Canceled},
	} {
		for _, wrap := range []bool{false, true} {
			name := tc.name + "/spliced"
			if wrap {
				name = tc.name + "/buffered"
			}
			t.Run(name, func(t *testing.T) {
				a0, a1 := tcpPair(t)
				b0, b1 := tcpPair(t)
				var ra net.Conn = a1
				if wrap {
					ra = buffered{a1}
				}
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				done := make(chan relayResult, 1)
				go func() {
					st, err := Relay(ctx, ra, b1, tc.lim)
					done <- relayResult{st, err}
				}()
				if _, err := a0.Write([]byte("hello")); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 5)
				if _, err := io.ReadFull(b0, buf); err != nil {
					t.Fatal(err)
				}
				if tc.cancel {
					cancel()
				}
				var r relayResult
				select {
				case r = <-done:
				case <-time.After(10 * time.Second):
					t.Fatal("relay did not end")
				}
				if !errors.Is(r.err, tc.want) {
					t.Fatalf("relay ended with %v, want %v", r.err, tc.want)
				}
				if r.st.AToB != 5 {
					t.Errorf("AToB %d, want 5", r.st.AToB)
				}
				for _, c := range []*net.TCPConn{a0, b0} {
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					if n, err := c.Read(buf); err == nil || n != 0 {
						t.Errorf("peer read %d, %v after the relay ended; want EOF or reset", n, err)
					}
				}
			})
		}
	}
}

// TestRelayIdleSeesSplicedProgress: a slow, steady transfer on the spliced
// path is progress (read from TCP_INFO), not idleness.
func TestRelayIdleSeesSplicedProgress(t *testing.T) {
	a0, a1 := tcpPair(t)
	b0, b1 := tcpPair(t)
	done := make(chan relayResult, 1)
	go func() {
		st, err := Relay(t.Context(), a1, b1, Limits{Idle: 400 * time.Millisecond})
		done <- relayResult{st, err}
	}()
	go io.Copy(io.Discard, b0)
	for range 12 { // 1.2 s: three idle periods
		if _, err := a0.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-done:
			t.Fatalf("relay ended during a steady transfer: %v", r.err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := a0.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b0.CloseWrite()
	r := <-done
	if r.err != nil || r.st.AToB != 12 {
		t.Fatalf("relay: %+v, %v; want 12 bytes, no error", r.st, r.err)
	}
}
