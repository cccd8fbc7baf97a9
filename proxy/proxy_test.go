package proxy

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/natrules/natrulestest"
)

// fakeFTP is a scripted FTP server on loopback that records what it got.
type fakeFTP struct {
	ln   net.Listener
	mu   sync.Mutex
	seen []string
}

func newFakeFTP(t *testing.T) *fakeFTP {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeFTP{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *fakeFTP) serve(c net.Conn) {
	defer c.Close()
	io.WriteString(c, "220-Welcome\r\n220 fake FTP\r\n")
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		f.mu.Lock()
		f.seen = append(f.seen, line)
		f.mu.Unlock()
		verb, _, _ := strings.Cut(strings.ToUpper(line), " ")
		switch verb {
		case "USER":
			io.WriteString(c, "331 Password please.\r\n")
		case "PASS":
			if strings.HasSuffix(line, " wrong") {
				io.WriteString(c, "530 Login incorrect.\r\n")
				continue
			}
			io.WriteString(c, "230 Logged in.\r\n")
		case "QUIT":
			io.WriteString(c, "221 Bye.\r\n")
			return
		default:
			io.WriteString(c, "200 OK "+verb+".\r\n")
		}
	}
}

func (f *fakeFTP) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

func (f *fakeFTP) addr() netip.AddrPort { return netip.MustParseAddrPort(f.ln.Addr().String()) }

// startProxy runs a forward-mode proxy whose "original destination" is dst.
func startProxy(t *testing.T, dst netip.AddrPort, mod func(*Config)) (netip.AddrPort, *natrulestest.Fake) {
	t.Helper()
	return startProxyServer(t, dst, mod, nil)
}

// startProxyServer is startProxy that also gives the server, if out is
// not nil.
func startProxyServer(t *testing.T, dst netip.AddrPort, mod func(*Config), out **Server) (netip.AddrPort, *natrulestest.Fake) {
	t.Helper()
	return startProxyLogged(t, dst, mod, out, io.Discard)
}

// startProxyLogged is startProxyServer with the server's log written to logw.
func startProxyLogged(t *testing.T, dst netip.AddrPort, mod func(*Config), out **Server, logw io.Writer) (netip.AddrPort, *natrulestest.Fake) {
	t.Helper()
	cfg := Config{Policy: alg.DefaultPolicy(), PortLo: 50000, PortHi: 50009, IdleTimeout: time.Minute, ConnectTimeout: time.Second}
	cfg.Policy.AllowLoopbackServer = true // the fake server is on loopback
	if mod != nil {
		mod(&cfg)
	}
	holes := &natrulestest.Fake{}
	holes.Setup(context.Background())
	s, err := New(cfg, holes, slog.New(slog.NewTextHandler(logw, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s.originalDst = func(*net.TCPConn) (netip.AddrPort, error) { return dst, nil }
	if out != nil {
		*out = s
	}
	empty := map[netip.Addr]struct{}{} // loopback is "local"; the test needs it not to be
	s.local.set.Store(&empty)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.Drain(dctx)
		dcancel()
		s.Close()
	})
	return netip.MustParseAddrPort(ln.Addr().String()), holes
}

type client struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, a netip.AddrPort) *client {
	t.Helper()
	c, err := net.Dial("tcp", a.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, r: bufio.NewReader(c)}
}

// reply reads one whole reply and returns its final line.
func (c *client) reply(t *testing.T) string {
	t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			t.Fatalf("read reply: %v", err)
		}
		if len(line) >= 4 && line[3] == ' ' {
			return strings.TrimRight(line, "\r\n")
		}
	}
}

func (c *client) send(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		t.Fatal(err)
	}
}

func TestRelayAndLocalRefusals(t *testing.T) {
	srv := newFakeFTP(t)
	pa, holes := startProxy(t, srv.addr(), nil)
	c := dial(t, pa)
	if r := c.reply(t); r != "220 fake FTP" {
		t.Fatalf("greeting %q", r)
	}
	// A command split across segments behaves like one.
	c.send(t, "US")
	time.Sleep(20 * time.Millisecond)
	c.send(t, "ER anonymous\r\n")
	if r := c.reply(t); !strings.HasPrefix(r, "331") {
		t.Fatalf("USER: %q", r)
	}
	// Two lines in one segment are both handled, in order.
	c.send(t, "PASS x\r\nNOOP\r\n")
	if r := c.reply(t); !strings.HasPrefix(r, "230") {
		t.Fatalf("PASS: %q", r)
	}
	if r := c.reply(t); r != "200 OK NOOP." {
		t.Fatalf("NOOP: %q", r)
	}
	for _, tc := range []struct{ cmd, code string }{
		{"PORT 192,0,2,66,195,80\r\n", "501"}, // bounce to a third host
		{"EPRT |1|192.0.2.66|50000|\r\n", "501"},
		{"AUTH TLS\r\n", "534"},
	} {
		c.send(t, tc.cmd)
		if r := c.reply(t); !strings.HasPrefix(r, tc.code) {
			t.Fatalf("%q: got %q, want %s", tc.cmd, r, tc.code)
		}
	}
	c.send(t, "QUIT\r\n")
	if r := c.reply(t); !strings.HasPrefix(r, "221") {
		t.Fatalf("QUIT: %q", r)
	}
	for _, l := range srv.got() {
		if strings.HasPrefix(l, "PORT") || strings.HasPrefix(l, "EPRT") || strings.HasPrefix(l, "AUTH") {
			t.Fatalf("refused command reached the server: %q (all: %q)", l, srv.got())
		}
	}
	if n := len(holes.Live()); n != 0 {
		t.Fatalf("%d holes open", n)
	}
}

func TestUpstreamRefused421(t *testing.T) {
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	dead := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close() // nothing listens there now
	pa, _ := startProxy(t, dead, nil)
	start := time.Now()
	c := dial(t, pa)
	if r := c.reply(t); !strings.HasPrefix(r, "421 ") {
		t.Fatalf("want 421, got %q", r)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("421 took %s", d)
	}
}

func TestNotRedirectedRefused(t *testing.T) {
	// A connection made straight to the listener has itself as original
	// destination: dialing it would loop.
	cfg := Config{Policy: alg.DefaultPolicy(), PortLo: 50000, PortHi: 50001}
	s, err := New(cfg, &natrulestest.Fake{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	self := netip.MustParseAddrPort(ln.Addr().String())
	s.originalDst = func(*net.TCPConn) (netip.AddrPort, error) { return self, nil }
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go s.Serve(ctx, ln)
	c := dial(t, self)
	if r := c.reply(t); !strings.HasPrefix(r, "421 ") || !strings.Contains(r, "not redirected") {
		t.Fatalf("want 421 not redirected, got %q", r)
	}
}

func TestSessionLimit(t *testing.T) {
	srv := newFakeFTP(t)
	pa, _ := startProxy(t, srv.addr(), func(c *Config) { c.MaxSessions = 1 })
	first := dial(t, pa)
	first.reply(t)
	second := dial(t, pa)
	if r := second.reply(t); !strings.HasPrefix(r, "421 ") {
		t.Fatalf("second session: want 421, got %q", r)
	}
}

func TestIdleTimeout(t *testing.T) {
	srv := newFakeFTP(t)
	pa, _ := startProxy(t, srv.addr(), func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	c := dial(t, pa)
	c.reply(t)
	start := time.Now()
	if r := c.reply(t); !strings.HasPrefix(r, "421 ") {
		t.Fatalf("want 421 on idle, got %q", r)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("idle timeout fired after %s", d)
	}
}
