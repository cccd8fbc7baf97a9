package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
	"github.com/ftpalg/ftpalg/proxy"
)

// adminLimits bound what clients of the admin listener can hold: each
// connection is a file descriptor of the process that also accepts FTP,
// and a keep-alive connection without an idle timeout is held forever.
type adminLimits struct {
	// maxConns caps the connections served at once (see connCap). Probes
	// and a scraper need a few.
	maxConns int
	// readHeader and read bound reading a request, write its answer (a
	// scrape is some tens of KiB), idle a keep-alive connection between
	// requests.
	readHeader, read, write, idle time.Duration
	// silent is how long a connection may stay open without a request
	// before it can be closed at the cap: a probe sends its request at
	// once, and the header timeout alone would let connections that never
	// send one, reopened as they time out, keep the probes out.
	silent time.Duration
}

var defaultAdminLimits = adminLimits{
	maxConns:   32,
	readHeader: 5 * time.Second,
	read:       10 * time.Second,
	write:      30 * time.Second,
	idle:       30 * time.Second,
	silent:     time.Second,
}

// startAdmin serves /livez, /readyz and /metrics on addr (nothing if
// not set) until the returned Closer is closed. ready is nil when ready,
// else the reason /readyz gives. listen opens the listener (the
// upgrader's, so that a new process inherits it).
func startAdmin(addr config.ListenAddr, listen proxy.ListenFunc, ready func() error, reg *prometheus.Registry, log *slog.Logger) (io.Closer, error) {
	if !addr.IsSet() {
		return io.NopCloser(strings.NewReader("")), nil
	}
	ln, err := listen(context.Background(), "tcp", addr.TCPAddr().String())
	if err != nil {
		return nil, fmt.Errorf("admin listener %s: %w", addr, err)
	}
	return serveAdmin(ln, defaultAdminLimits, adminMux(ready, reg), log), nil
}

func adminMux(ready func() error, reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

// serveAdmin serves h on ln within lim until the server is closed.
func serveAdmin(ln net.Listener, lim adminLimits, h http.Handler, log *slog.Logger) *http.Server {
	cl := newConnCap(ln, lim.maxConns, lim.silent)
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.readHeader,
		ReadTimeout:       lim.read,
		WriteTimeout:      lim.write,
		IdleTimeout:       lim.idle,
		ConnState:         cl.track,
		ErrorLog:          slog.NewLogLogger(log.With("component", "admin").Handler(), slog.LevelWarn),
	}
	go func() {
		if err := hs.Serve(cl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin server", "err", err)
		}
	}()
	return hs
}

// connCap is a listener that serves at most max connections at once. At
// the cap, the connection that has waited longest without a request is
// closed to make room: one idle between keep-alive requests, or one open
// for longer than silent without a complete request. Only requests in
// progress, bounded by the read and write timeouts, and connections younger
// than silent make a new connection wait, in the kernel's accept queue (no
// descriptor of ours). golang.org/x/net/netutil.LimitListener only waits: a
// few hundred idle keep-alive connections would keep the probes out for
// rounds of the idle timeout.
type connCap struct {
	net.Listener
	silent time.Duration
	slots  chan struct{} // a token per connection served
	wake   chan struct{} // a connection went idle (capacity 1)
	done   chan struct{}
	once   sync.Once

	mu      sync.Mutex
	waiting map[net.Conn]waitingConn // connections without a request in progress
}

// waitingConn is a connection without a request in progress: idle since a
// keep-alive answer, or new (no complete request yet) since accepted.
type waitingConn struct {
	idle  bool
	since time.Time
}

func newConnCap(ln net.Listener, max int, silent time.Duration) *connCap {
	return &connCap{Listener: ln, silent: silent, slots: make(chan struct{}, max), wake: make(chan struct{}, 1),
		done: make(chan struct{}), waiting: map[net.Conn]waitingConn{}}
}

func (l *connCap) Accept() (net.Conn, error) {
	for {
		select {
		case l.slots <- struct{}{}:
			return l.accept()
		default:
		}
		victim, wait := l.pick(time.Now())
		if victim != nil {
			victim.Close() // gives its slot back
			continue
		}
		if l.waitSlot(wait) {
			return l.accept()
		}
		select {
		case <-l.done:
			return nil, net.ErrClosed
		default:
		}
	}
}

// waitSlot waits for a free slot (true), a connection going idle, the
// closing of the listener, or wait if not 0: then a new connection turns
// silent.
func (l *connCap) waitSlot(wait time.Duration) bool {
	var silent <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		silent = t.C
	}
	select {
	case l.slots <- struct{}{}:
		return true
	case <-l.wake:
	case <-silent:
	case <-l.done:
	}
	return false
}

// accept takes the next connection; the caller holds a slot.
func (l *connCap) accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &cappedConn{Conn: c, l: l}, nil
}

// pick removes and returns the connection to close at the cap: of the idle
// ones and the new ones older than silent, the one waiting since the
// earliest. If there is none, wait is how long until the oldest new
// connection turns silent (0 if there is no new connection).
func (l *connCap) pick(now time.Time) (victim net.Conn, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var since time.Time
	for c, w := range l.waiting {
		if left := w.since.Add(l.silent).Sub(now); !w.idle && left > 0 {
			if wait == 0 || left < wait {
				wait = left
			}
			continue
		}
		if victim == nil || w.since.Before(since) {
			victim, since = c, w.since
		}
	}
	if victim == nil {
		return nil, wait
	}
	delete(l.waiting, victim)
	return victim, 0
}

// track is the server's ConnState hook: it keeps the set of connections
// without a request in progress.
func (l *connCap) track(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	switch s {
	case http.StateNew, http.StateIdle:
		l.waiting[c] = waitingConn{idle: s == http.StateIdle, since: time.Now()}
	default:
		delete(l.waiting, c)
	}
	l.mu.Unlock()
	if s == http.StateIdle {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

func (l *connCap) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// cappedConn gives its slot back when closed (once: the server and shed
// may both close it).
type cappedConn struct {
	net.Conn
	l    *connCap
	once sync.Once
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.waiting, c)
		c.l.mu.Unlock()
		<-c.l.slots
	})
	return err
}
