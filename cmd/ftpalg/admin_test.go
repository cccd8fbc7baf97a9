package main

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type adminConn struct {
	c net.Conn
	r *bufio.Reader
}

func startTestAdmin(t *testing.T, lim adminLimits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := serveAdmin(ln, lim, adminMux(func() bool { return true }, prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

func dialAdmin(t *testing.T, addr string) adminConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return adminConn{c, bufio.NewReader(c)}
}

// get sends one keep-alive request for /livez and reads the answer.
func (c adminConn) get(d time.Duration) error {
	c.c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(c.c, "GET /livez HTTP/1.1\r\nHost: admin\r\n\r\n"); err != nil {
		return err
	}
	return c.answer()
}

func (c adminConn) answer() error {
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}

// closedByServer says whether the server closed c within d.
func (c adminConn) closedByServer(d time.Duration) error {
	c.c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c.r) // EOF: closed; an error: still open
	return err
}

func TestAdminLimits(t *testing.T) {
	long := time.Minute // never reached: whatever closes a connection here is the cap
	t.Run("at the cap the connection idle longest is closed for a new one", func(t *testing.T) {
		addr := startTestAdmin(t, adminLimits{maxConns: 2, readHeader: long, read: long, write: long, idle: long})
		a, b := dialAdmin(t, addr), dialAdmin(t, addr)
		for i, c := range []adminConn{a, b} {
			if err := c.get(2 * time.Second); err != nil {
				t.Fatalf("connection %d within the cap: %v", i, err)
			}
		}
		// Both slots are taken: the listener has shed the older idle one
		// already, to serve the next without waiting.
		if err := a.closedByServer(2 * time.Second); err != nil {
			t.Fatalf("oldest idle connection at the cap: %v, want closed", err)
		}
		c := dialAdmin(t, addr)
		if err := c.get(2 * time.Second); err != nil {
			t.Fatalf("new connection at the cap: %v", err)
		}
		if err := b.closedByServer(2 * time.Second); err != nil {
			t.Fatalf("next idle connection at the cap: %v, want closed", err)
		}
	})

	t.Run("requests in progress make a new connection wait", func(t *testing.T) {
		const header = 300 * time.Millisecond
		addr := startTestAdmin(t, adminLimits{maxConns: 2, readHeader: header, read: long, write: long, idle: long})
		slow := []adminConn{dialAdmin(t, addr), dialAdmin(t, addr)}
		for _, c := range slow {
			if _, err := io.WriteString(c.c, "GET /livez HTTP/1.1\r\n"); err != nil { // never ends
				t.Fatal(err)
			}
		}
		waiting := dialAdmin(t, addr)
		waiting.c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(waiting.c, "GET /livez HTTP/1.1\r\nHost: admin\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if err := waiting.answer(); err != nil {
			t.Fatalf("waiting connection: %v", err)
		}
		// It was served only once a slow request had been ended by the
		// header timeout (its Close gave the slot back before the accept).
		var ended int
		for _, c := range slow {
			if c.closedByServer(50*time.Millisecond) == nil {
				ended++
			}
		}
		if ended == 0 {
			t.Fatal("served while the cap was held by requests in progress")
		}
	})

	t.Run("idle connections are closed after the idle timeout", func(t *testing.T) {
		addr := startTestAdmin(t, adminLimits{maxConns: 4, readHeader: long, read: long, write: long, idle: 200 * time.Millisecond})
		c := dialAdmin(t, addr)
		if err := c.get(2 * time.Second); err != nil {
			t.Fatal(err)
		}
		if err := c.closedByServer(5 * time.Second); err != nil {
			t.Fatalf("idle connection: %v, want closed", err)
		}
	})
}

func TestAdminDefaults(t *testing.T) {
	d := defaultAdminLimits
	for name, v := range map[string]time.Duration{"readHeader": d.readHeader, "read": d.read, "write": d.write, "idle": d.idle} {
		if v <= 0 {
			t.Errorf("admin %s timeout unset", name)
		}
	}
	if d.maxConns <= 0 {
		t.Errorf("admin connection cap unset")
	}
}
