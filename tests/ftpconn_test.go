package tests

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// ftpConn is a minimal hand-driven FTP control connection, for the cases
// where a real client would not misbehave the way an attacker does.
type ftpConn struct {
	c       net.Conn
	r       *bufio.Reader
	timeout time.Duration // per reply; 10 s when zero
}

func newFTPConn(c net.Conn) *ftpConn { return &ftpConn{c: c, r: bufio.NewReader(c)} }

// reply reads one complete (possibly multi-line) reply.
func (f *ftpConn) reply() (int, string, error) {
	d := f.timeout
	if d == 0 {
		d = 10 * time.Second
	}
	f.c.SetReadDeadline(time.Now().Add(d))
	code, text, err := bed.ReadReply(f.r)
	if err != nil {
		return 0, text, fmt.Errorf("read reply: %w (so far %q)", err, text)
	}
	return code, text, nil
}

func (f *ftpConn) cmd(line string) (int, string, error) {
	f.c.SetWriteDeadline(time.Now().Add(max(5*time.Second, f.timeout)))
	if _, err := f.c.Write([]byte(line + "\r\n")); err != nil {
		return 0, "", err
	}
	return f.reply()
}

// login reads the greeting and logs in anonymously.
func (f *ftpConn) login() error {
	if code, text, err := f.reply(); err != nil || code != 220 {
		return fmt.Errorf("greeting %d %q: %v", code, text, err)
	}
	if code, text, err := f.cmd("USER anonymous"); err != nil || code != 331 {
		return fmt.Errorf("USER: %d %q %v", code, text, err)
	}
	if code, text, err := f.cmd("PASS test@example.com"); err != nil || code != 230 {
		return fmt.Errorf("PASS: %d %q %v", code, text, err)
	}
	return nil
}

// pasv sends PASV and returns the endpoint it announced.
func (f *ftpConn) pasv() (netip.AddrPort, error) {
	code, text, err := f.cmd("PASV")
	if err != nil || code != 227 {
		return netip.AddrPort{}, fmt.Errorf("PASV: %d %q %v", code, text, err)
	}
	return bed.Parse227(text)
}

func (f *ftpConn) close() { f.c.Close() }
