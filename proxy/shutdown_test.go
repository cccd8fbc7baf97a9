package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/natrules/natrulestest"
)

// floodServer greets and then sends replies nobody asked for, without end
// (the gateway relays unsolicited replies), and reports on blocked once a
// write has waited over 100 ms for room: the gateway has stopped reading
// because its client has.
func floodServer(t *testing.T, blocked chan<- struct{}) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	line := []byte("211 " + strings.Repeat("status ", 60) + "\r\n")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.WriteString(c, "220 ready\r\n"); err != nil {
					return
				}
				signalled := false
				for {
					c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
					_, err := c.Write(line)
					switch {
					case errors.Is(err, os.ErrDeadlineExceeded):
						if !signalled {
							blocked <- struct{}{}
							signalled = true
						}
						// Lines may now be cut: the gateway ends the
						// session on garbage, which also ends the test's
						// wait, so stop sending.
						<-time.After(time.Hour)
					case err != nil:
						return
					}
				}
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// After the grace, sessions whose clients do not read end at once, together:
// Drain returns within its bound, not after the 30 s write timeout.
func TestDrainStuckClients(t *testing.T) {
	const clients = 4
	blocked := make(chan struct{}, clients)
	up := floodServer(t, blocked)
	cfg := Config{Policy: alg.DefaultPolicy(), PortLo: 50000, PortHi: 50009, WriteTimeout: 30 * time.Second}
	cfg.Policy.AllowLoopbackServer = true
	s, err := New(cfg, &natrulestest.Fake{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.originalDst = func(*net.TCPConn) (netip.AddrPort, error) { return up, nil }
	empty := map[netip.Addr]struct{}{}
	s.local.set.Store(&empty)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { s.Serve(ctx, ln); close(served) }()
	for range clients {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.(*net.TCPConn).SetReadBuffer(4096) // fills sooner
	}
	for i := range clients {
		select {
		case <-blocked:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d sessions blocked on their client", i, clients)
		}
	}
	cancel()
	<-served
	grace, gctx := 200*time.Millisecond, context.Background()
	gctx, gcancel := context.WithTimeout(gctx, grace)
	defer gcancel()
	start := time.Now()
	s.Drain(gctx)
	took := time.Since(start)
	if limit := grace + drainWait; took > limit {
		t.Fatalf("Drain took %s, want at most %s", took, limit)
	}
	if n := s.Active(); n != 0 {
		t.Fatalf("%d sessions still active after Drain (%s)", n, took)
	}
	n := 0
	s.sessions.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d sessions still registered after Drain", n)
	}
	t.Logf("ok: Drain returned %s after a %s grace with %d stuck clients", took.Round(time.Millisecond), grace, clients)
}
