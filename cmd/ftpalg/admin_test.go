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
	hs := serveAdmin(ln, lim, adminMux(func() error { return nil }, prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
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
	t.Run("at the cap an idle connection is closed for a new one", func(t *testing.T) {
		addr := startTestAdmin(t, adminLimits{maxConns: 2, readHeader: long, read: long, write: long, idle: long, silent: long})
		// closed gets the index of each connection the server closes
		// within 5 s, -1 for one it does not.
		closed := make(chan int, 3)
		watch := func(i int, c adminConn) {
			go func() {
				if c.closedByServer(5*time.Second) == nil {
					closed <- i
				} else {
					closed <- -1
				}
			}()
		}
		held := []adminConn{dialAdmin(t, addr), dialAdmin(t, addr)}
		for i, c := range held {
			if err := c.get(2 * time.Second); err != nil {
				t.Fatalf("connection %d within the cap: %v", i, err)
			}
		}
		// Both slots are taken: the listener has already shed the one that
		// went idle first on the server's side (not necessarily the first
		// answered: the server's state hooks run after the answer;
		// TestConnCapPick checks the order), to serve the next at once.
		for i, c := range held {
			watch(i, c)
		}
		first := <-closed
		if first < 0 {
			t.Fatal("no idle connection closed at the cap")
		}
		select {
		case i := <-closed:
			t.Fatalf("connection %d closed too before a new one came (%d was)", i, first)
		default:
		}
		c := dialAdmin(t, addr)
		if err := c.get(2 * time.Second); err != nil {
			t.Fatalf("new connection at the cap: %v", err)
		}
		// At the cap again: one of the two idle ones is closed.
		watch(2, c)
		if next := <-closed; next < 0 || next == first {
			t.Fatalf("connection %d closed after %d, want another one closed at the cap", next, first)
		}
	})

	t.Run("requests in progress make a new connection wait", func(t *testing.T) {
		const header = 300 * time.Millisecond
		addr := startTestAdmin(t, adminLimits{maxConns: 2, readHeader: header, read: long, write: long, idle: long, silent: long})
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
		addr := startTestAdmin(t, adminLimits{maxConns: 4, readHeader: long, read: long, write: long, idle: 200 * time.Millisecond, silent: long})
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
	for name, v := range map[string]time.Duration{"readHeader": d.readHeader, "read": d.read, "write": d.write, "idle": d.idle, "silent": d.silent} {
		if v <= 0 {
			t.Errorf("admin %s timeout unset", name)
		}
	}
	if d.maxConns <= 0 {
		t.Errorf("admin connection cap unset")
	}
}

func TestAdminShedsSilent(t *testing.T) {
	long := time.Minute
	for _, tc := range []struct {
		name   string
		send   string        // what each connection holding the cap sends
		silent time.Duration // adminLimits.silent
		served bool          // a new connection is served while they are open
	}{
		{name: "connections that never send a request", send: "", silent: 200 * time.Millisecond, served: true},
		{name: "connections with an unfinished request", send: "GET /livez HTTP/1.1\r\n", silent: 200 * time.Millisecond, served: true},
		{name: "not before they are silent", send: "", silent: long, served: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startTestAdmin(t, adminLimits{maxConns: 2, readHeader: long, read: long, write: long, idle: long, silent: tc.silent})
			held := []adminConn{dialAdmin(t, addr), dialAdmin(t, addr)}
			for _, c := range held {
				if _, err := io.WriteString(c.c, tc.send); err != nil {
					t.Fatal(err)
				}
			}
			budget := 5 * time.Second
			if !tc.served {
				budget = 500 * time.Millisecond
			}
			err := dialAdmin(t, addr).get(budget)
			var ne net.Error
			switch {
			case tc.served && err != nil:
				t.Fatalf("new connection at a cap held by silent ones: %v", err)
			case !tc.served && (err == nil || !errors.As(err, &ne) || !ne.Timeout()):
				t.Fatalf("new connection at a cap held by young ones: %v, want a timeout", err)
			}
			wait := 2 * time.Second
			if !tc.served {
				wait = 200 * time.Millisecond
			}
			err = held[0].closedByServer(wait)
			if tc.served && err != nil {
				t.Fatalf("oldest silent connection: %v, want closed", err)
			}
			if !tc.served && err == nil {
				t.Fatal("young connection closed at the cap")
			}
		})
	}
}

// namedConn is a distinct key for connCap.waiting.
type namedConn struct {
	net.Conn
	name string
}

func TestConnCapPick(t *testing.T) {
	now := time.Unix(1000, 0)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	type entry struct {
		name  string
		idle  bool
		since time.Time
	}
	for _, tc := range []struct {
		name    string
		waiting []entry
		victim  string        // "" for none
		wait    time.Duration // when no victim
	}{
		{name: "none waiting"},
		{name: "idle longest first", waiting: []entry{{"a", true, ago(time.Second)}, {"b", true, ago(3 * time.Second)}}, victim: "b"},
		{name: "silent oldest first", waiting: []entry{{"a", false, ago(2 * time.Second)}, {"b", false, ago(3 * time.Second)}}, victim: "b"},
		{name: "new not yet silent", waiting: []entry{{"a", false, ago(300 * time.Millisecond)}, {"b", false, ago(600 * time.Millisecond)}}, wait: 400 * time.Millisecond},
		{name: "silent before a later idle", waiting: []entry{{"idle", true, ago(2 * time.Second)}, {"silent", false, ago(5 * time.Second)}}, victim: "silent"},
		{name: "idle before a later silent", waiting: []entry{{"idle", true, ago(5 * time.Second)}, {"silent", false, ago(2 * time.Second)}}, victim: "idle"},
		{name: "idle before an older new not yet silent", waiting: []entry{{"idle", true, ago(100 * time.Millisecond)}, {"new", false, ago(500 * time.Millisecond)}}, victim: "idle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newConnCap(nil, 2, time.Second)
			for _, e := range tc.waiting {
				l.waiting[&namedConn{name: e.name}] = waitingConn{idle: e.idle, since: e.since}
			}
			victim, wait := l.pick(now)
			var got string
			left := len(tc.waiting)
			if victim != nil {
				nc, ok := victim.(*namedConn)
				if !ok {
					t.Fatalf("picked %T, not one of the test's connections", victim)
				}
				got, left = nc.name, left-1
			}
			if got != tc.victim || wait != tc.wait {
				t.Fatalf("pick = %q, wait %v; want %q, wait %v", got, wait, tc.victim, tc.wait)
			}
			if n := len(l.waiting); n != left {
				t.Fatalf("%d left waiting, want %d (the picked one removed)", n, left)
			}
		})
	}
}
