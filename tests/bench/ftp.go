package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// clientNet opens the client's sockets.
type clientNet interface {
	Dial(addr netip.AddrPort, timeout time.Duration) (net.Conn, error)
	Listen(addr netip.AddrPort) (net.Listener, error)
}

// bedNet opens them in the bed's client namespace from this process: each
// socket costs a locked OS thread and two setns calls, cheap next to the
// load generator's sessions but not next to a 1 KiB file's round trips.
type bedNet struct{ b *bed.Bed }

func (n bedNet) Dial(addr netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	return n.b.Dial(n.b.Client, addr, timeout)
}

func (n bedNet) Listen(addr netip.AddrPort) (net.Listener, error) {
	return n.b.Listen(n.b.Client, addr)
}

// hostNet opens them in this process's own namespace: the files client runs
// as a child process inside the client namespace, as curl or lftp would.
type hostNet struct{}

func (hostNet) Dial(addr netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", addr.String(), timeout)
}

func (hostNet) Listen(addr netip.AddrPort) (net.Listener, error) {
	return net.Listen("tcp", addr.String()) // the address picks the family, as bed.Listen does
}

// ftpc is a minimal FTP control connection for the load generator and the
// files client.
type ftpc struct {
	nw clientNet
	c  net.Conn
	r  *bufio.Reader
	// steps, if set, accumulates the time spent in each step (a command
	// and its reply, or the data connection).
	steps map[string]time.Duration
}

func (f *ftpc) took(step string, since time.Time) {
	if f.steps != nil {
		f.steps[step] += time.Since(since)
	}
}

const ioTimeout = 10 * time.Second

// reply reads one complete (possibly multi-line) reply.
func (f *ftpc) reply() (int, string, error) {
	f.c.SetReadDeadline(time.Now().Add(ioTimeout))
	return bed.ReadReply(f.r)
}

func (f *ftpc) cmd(line string) (int, string, error) {
	f.c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(f.c, line+"\r\n"); err != nil {
		return 0, "", err
	}
	return f.reply()
}

// expect sends line (or only reads when line is "") and checks the code.
// The error names the step, so that failures can be counted by kind.
func (f *ftpc) expect(step, line string, want int) (string, error) {
	defer f.took(step, time.Now())
	var code int
	var text string
	var err error
	if line == "" {
		code, text, err = f.reply()
	} else {
		code, text, err = f.cmd(line)
	}
	if err != nil {
		return text, fmt.Errorf("%s: %s", step, shortErr(err))
	}
	if code != want {
		return text, fmt.Errorf("%s: got %d %s", step, code, strings.TrimSpace(firstLine(text)))
	}
	return text, nil
}

// dialLogin opens a control connection to server:21 from the client
// namespace and logs in anonymously.
func dialLogin(nw clientNet, server netip.Addr) (*ftpc, error) {
	c, err := nw.Dial(netip.AddrPortFrom(server, 21), ioTimeout)
	if err != nil {
		return nil, fmt.Errorf("connect: %s", shortErr(err))
	}
	f := &ftpc{nw: nw, c: c, r: bufio.NewReaderSize(c, 1024)}
	if _, err := f.expect("greeting", "", 220); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := f.expect("USER", "USER anonymous", 331); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := f.expect("PASS", "PASS bench@example.com", 230); err != nil {
		c.Close()
		return nil, err
	}
	return f, nil
}

// oneSession logs in, fetches path, checks that want bytes arrived, and
// quits.
func oneSession(nw clientNet, server netip.Addr, passive bool, path string, want int) error {
	f, err := dialLogin(nw, server)
	if err != nil {
		return err
	}
	defer f.c.Close()
	if err := f.retr(passive, path, want); err != nil {
		return err
	}
	_, err = f.expect("QUIT", "QUIT", 221)
	return err
}

// retr opens a data connection (passive: PASV and connect; active: listen
// in the client namespace and PORT), fetches path and checks its size and
// the 226.
func (f *ftpc) retr(passive bool, path string, want int) error {
	var data net.Conn
	var ln *net.TCPListener
	if passive {
		text, err := f.expect("PASV", "PASV", 227)
		if err != nil {
			return err
		}
		ep, err := bed.Parse227(text)
		if err != nil {
			return fmt.Errorf("PASV: %v", err)
		}
		t := time.Now()
		data, err = f.nw.Dial(ep, ioTimeout)
		f.took("connect", t)
		if err != nil {
			return fmt.Errorf("data connect: %s", shortErr(err))
		}
		defer data.Close()
	} else {
		l, err := f.nw.Listen(netip.AddrPortFrom(bed.Client4, 0))
		if err != nil {
			return fmt.Errorf("data listen: %s", shortErr(err))
		}
		defer l.Close()
		ln = l.(*net.TCPListener)
		ap := ln.Addr().(*net.TCPAddr).AddrPort()
		a := ap.Addr().As4()
		port := fmt.Sprintf("PORT %d,%d,%d,%d,%d,%d", a[0], a[1], a[2], a[3], ap.Port()>>8, ap.Port()&0xff)
		if _, err := f.expect("PORT", port, 200); err != nil {
			return err
		}
	}
	if _, err := f.expect("RETR", "RETR "+path, 150); err != nil {
		return err
	}
	defer f.took("data", time.Now())
	if !passive {
		ln.SetDeadline(time.Now().Add(ioTimeout))
		var err error
		data, err = ln.Accept()
		if err != nil {
			return fmt.Errorf("data accept: %s", shortErr(err))
		}
		defer data.Close()
	}
	data.SetReadDeadline(time.Now().Add(ioTimeout))
	n, err := io.Copy(io.Discard, data)
	// Close at once, as FTP clients do: the server sends 226 only after it
	// has seen the data connection end.
	data.Close()
	if err != nil {
		return fmt.Errorf("data read: %s", shortErr(err))
	}
	if n != int64(want) {
		return fmt.Errorf("data: %d bytes, want %d", n, want)
	}
	_, err = f.expect("transfer complete", "", 226)
	return err
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// shortErr strips addresses and ports so that errors group by kind.
func shortErr(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	switch {
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected EOF"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return err.Error()
}

// serveRelay is the relay floor's relay, run as a child process of the
// bench (-serve-relay "listen upstream") in the gateway namespace: the
// least a user-space control-channel proxy can do, one goroutine per
// direction copying bytes, half-close passed on. With kernel set it is the
// kernel relay floor (see kernelRelay): the same relay, whose sockets are
// handed to an sk_skb verdict program once both are connected.
func serveRelay(spec string, kernel bool) error {
	listen, upstream, ok := strings.Cut(spec, " ")
	if !ok {
		return fmt.Errorf("-serve-relay %q: want \"listen upstream\"", spec)
	}
	var kr *kernelRelay
	if kernel {
		var err error
		if kr, err = newKernelRelay(1 << 16); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Println("relay listening on", listen, "for", upstream)
	for {
		c, err := ln.Accept()
		if err != nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		go func() {
			if _, err := relayConn(c.(*net.TCPConn), upstream, kr); err != nil {
				fmt.Fprintln(os.Stderr, "relay:", err)
			}
		}()
	}
}

// relayTransparent: the relay connects to the server from its client's
// address (IP_TRANSPARENT; the bench's gateway routes the answers back to
// it, see transparentRouting).
var relayTransparent bool

func relayDialer(c *net.TCPConn) *net.Dialer {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if !relayTransparent {
		return d
	}
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		d.LocalAddr = &net.TCPAddr{IP: a.IP}
	}
	d.Control = func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_IP, syscall.IP_TRANSPARENT, 1)
		}); err != nil {
			return err
		}
		return serr
	}
	return d
}

// relayConn relays one client until both directions have ended and says
// how many bytes went through user space (with a kernel relay: only what
// arrived before the sockets were handed over).
func relayConn(c *net.TCPConn, upstream string, kr *kernelRelay) (userBytes int64, err error) {
	defer c.Close()
	d, err := relayDialer(c).Dial("tcp", upstream)
	if err != nil {
		return 0, err
	}
	s := d.(*net.TCPConn)
	defer s.Close()
	copy := func(dst, src *net.TCPConn) int64 { n, _ := io.Copy(dst, src); return n }
	if kr != nil {
		leave, err := kr.join(c, s)
		if err != nil {
			return 0, err
		}
		defer leave()
		// read(2), not the splice(2) io.Copy picks for TCP: splice reads
		// the socket's own queue, past what the verdict program passes.
		copy = func(dst, src *net.TCPConn) int64 {
			n, _ := io.Copy(struct{ io.Writer }{dst}, struct{ io.Reader }{src})
			drained(src, dst, 2*time.Second)
			return n
		}
	}
	up := make(chan int64)
	go func() {
		n := copy(s, c)
		s.CloseWrite()
		up <- n
	}()
	n := copy(c, s)
	c.CloseWrite()
	return n + <-up, nil
}

// serveIdle is the idle test's upstream, run as a child process of the
// bench (-serve-idle) inside the WAN outsider namespace, so that its sockets
// count against its own RLIMIT_NOFILE, not the load generator's. It greets
// every connection with 220 and holds it; vsftpd would fork a process per
// session and measure vsftpd rather than the gateway.
func serveIdle(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println("idle server listening on", addr)
	var held []net.Conn
	for {
		c, err := ln.Accept()
		if err != nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("220 idle bench server\r\n"))
		held = append(held, c)
	}
}
