package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// ftpsClient is the FTPS benchmark's client: explicit FTPS (AUTH TLS,
// PBSZ 0, PROT P), EPSV, data connections resuming the control
// connection's TLS session, as curl does. It replaces curl for the
// measurement: curl 7.88 spent ~200 ms per file before each transfer from
// vsftpd's own FTPS, and through ftpalg it sometimes waited 1 s between a
// 229 and starting its data connect (docs/performance.md): either would
// measure curl.
type ftpsClient struct {
	b    *bed.Bed
	ns   string
	addr netip.AddrPort
	cfg  *tls.Config
	c    net.Conn
	r    *bufio.Reader
}

func dialFTPS(b *bed.Bed, ns string, addr netip.AddrPort) (*ftpsClient, error) {
	raw, err := b.Dial(ns, addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	f := &ftpsClient{b: b, ns: ns, addr: addr, c: raw, r: bufio.NewReader(raw),
		cfg: &tls.Config{InsecureSkipVerify: true, ServerName: "ftp.example", ClientSessionCache: tls.NewLRUClientSessionCache(4)}}
	if _, err := f.expect("", 220); err != nil {
		raw.Close()
		return nil, err
	}
	if _, err := f.expect("AUTH TLS", 234); err != nil {
		raw.Close()
		return nil, err
	}
	tc := tls.Client(raw, f.cfg)
	if err := tc.Handshake(); err != nil {
		raw.Close()
		return nil, fmt.Errorf("control handshake: %w", err)
	}
	f.c, f.r = tc, bufio.NewReader(tc)
	for _, st := range []struct {
		cmd  string
		code int
	}{{"USER anonymous", 331}, {"PASS bench@example.com", 230}, {"PBSZ 0", 200}, {"PROT P", 200}, {"TYPE I", 200}} {
		if _, err := f.expect(st.cmd, st.code); err != nil {
			f.c.Close()
			return nil, err
		}
	}
	return f, nil
}

// expect sends cmd (none if empty) and reads a reply with code want.
func (f *ftpsClient) expect(cmd string, want int) (string, error) {
	f.c.SetDeadline(time.Now().Add(60 * time.Second))
	if cmd != "" {
		if _, err := io.WriteString(f.c, cmd+"\r\n"); err != nil {
			return "", err
		}
	}
	code, text, err := bed.ReadReply(f.r)
	if err == nil && code != want {
		err = fmt.Errorf("%s: %d %q, want %d", cmd, code, strings.TrimSpace(text), want)
	}
	return text, err
}

// retr downloads path over a PROT P passive data connection; it returns
// the bytes read.
func (f *ftpsClient) retr(path string) (int64, error) {
	text, err := f.expect("EPSV", 229)
	if err != nil {
		return 0, err
	}
	i, j := strings.Index(text, "(|||"), strings.Index(text, "|)")
	if i < 0 || j < i {
		return 0, fmt.Errorf("bad 229 %q", text)
	}
	port, err := strconv.Atoi(text[i+4 : j])
	if err != nil {
		return 0, err
	}
	raw, err := f.b.Dial(f.ns, netip.AddrPortFrom(f.addr.Addr(), uint16(port)), 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer raw.Close()
	if _, err := f.expect("RETR "+path, 150); err != nil {
		return 0, err
	}
	dc := tls.Client(raw, f.cfg)
	dc.SetDeadline(time.Now().Add(120 * time.Second))
	n, err := io.Copy(io.Discard, dc)
	if err != nil {
		return n, fmt.Errorf("data: %w", err)
	}
	dc.Close()
	_, err = f.expect("", 226)
	return n, err
}

func (f *ftpsClient) close() {
	f.expect("QUIT", 221)
	f.c.Close()
}
