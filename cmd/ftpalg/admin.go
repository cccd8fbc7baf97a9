package main

import (
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
}

var defaultAdminLimits = adminLimits{
	maxConns:   32,
	readHeader: 5 * time.Second,
	read:       10 * time.Second,
	write:      30 * time.Second,
	idle:       30 * time.Second,
}

// startAdmin serves /livez, /readyz and /metrics on addr (nothing if
// empty) until the returned Closer is closed.
func startAdmin(addr string, ready func() bool, reg *prometheus.Registry, log *slog.Logger) (io.Closer, error) {
	if addr == "" {
		return io.NopCloser(strings.NewReader("")), nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener %s: %w", addr, err)
	}
	return serveAdmin(ln, defaultAdminLimits, adminMux(ready, reg), log), nil
}

func adminMux(ready func() bool, reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready: firewall rules not verified in place, or not accepting", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

// serveAdmin serves h on ln within lim until the server is closed.
func serveAdmin(ln net.Listener, lim adminLimits, h http.Handler, log *slog.Logger) *http.Server {
	cl := newConnCap(ln, lim.maxConns)
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
// the cap, the connection idle longest (a keep-alive between requests) is
// closed to make room; only requests in progress, bounded by the read and
// write timeouts, make a new connection wait, in the kernel's accept queue
// (no descriptor of ours). golang.org/x/net/netutil.LimitListener only
// waits: a few hundred idle keep-alive connections would keep the probes
// out for rounds of the idle timeout.
type connCap struct {
	net.Listener
	slots   chan struct{} // a token per connection served
	idleNow chan struct{} // a connection went idle (capacity 1)
	done    chan struct{}
	once    sync.Once

	mu   sync.Mutex
	idle map[net.Conn]time.Time // connections between requests, since when
}

func newConnCap(ln net.Listener, max int) *connCap {
	return &connCap{Listener: ln, slots: make(chan struct{}, max), idleNow: make(chan struct{}, 1),
		done: make(chan struct{}), idle: map[net.Conn]time.Time{}}
}

func (l *connCap) Accept() (net.Conn, error) {
	for {
		select {
		case l.slots <- struct{}{}:
			return l.accept()
		default:
		}
		if l.shed() {
			continue // its Close gave its slot back
		}
		select {
		case l.slots <- struct{}{}:
			return l.accept()
		case <-l.idleNow:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
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

// shed closes the connection idle longest; false if none is idle.
func (l *connCap) shed() bool {
	l.mu.Lock()
	var oldest net.Conn
	var since time.Time
	for c, t := range l.idle {
		if oldest == nil || t.Before(since) {
			oldest, since = c, t
		}
	}
	delete(l.idle, oldest)
	l.mu.Unlock()
	if oldest == nil {
		return false
	}
	oldest.Close()
	return true
}

// track is the server's ConnState hook: it keeps the set of idle
// connections.
func (l *connCap) track(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	if s == http.StateIdle {
		l.idle[c] = time.Now()
	} else {
		delete(l.idle, c)
	}
	l.mu.Unlock()
	if s == http.StateIdle {
		select {
		case l.idleNow <- struct{}{}:
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
		delete(c.l.idle, c)
		c.l.mu.Unlock()
		<-c.l.slots
	})
	return err
}
