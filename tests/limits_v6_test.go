package tests

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// dialFromAddr opens a control connection from src in ns to the IPv6
// server through the capture and returns what the gateway says first.
func dialFromAddr(t *testing.T, b *bed.Bed, ns string, src netip.Addr) (*ftpConn, string) {
	t.Helper()
	var c net.Conn
	err := b.InNS(ns, func() error {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
		var err error
		c, err = d.Dial("tcp6", netip.AddrPortFrom(bed.Server6, 21).String())
		return err
	})
	if err != nil {
		t.Fatalf("control connection from %s: %v", src, err)
	}
	f := newFTPConn(c)
	t.Cleanup(f.close)
	_, text, err := f.reply()
	if err != nil {
		t.Fatalf("from %s: %v", src, err)
	}
	return f, text
}

// FTPALG_MAX_SESSIONS_PER_CLIENT counts IPv6 clients per /64: two
// addresses of one /64 share the cap, an address of another /64 has its
// own.
func TestLimitsPerClientIPv6Prefix(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	var (
		a1    = netip.MustParseAddr("2001:db8:1::10") // the client's
		a2    = netip.MustParseAddr("2001:db8:1::11") // same /64
		other = netip.MustParseAddr("2001:db8:3::10") // another /64
	)
	for _, s := range []struct{ ns, cmd string }{
		{b.Client, "ip -6 addr add 2001:db8:1::11/64 dev eth0 nodad"},
		{b.Client, "ip -6 addr add 2001:db8:3::10/64 dev eth0 nodad"},
		{b.Gateway, "ip -6 addr add 2001:db8:3::1/64 dev lan0 nodad"},
	} {
		if _, err := b.Exec(s.ns, 10*time.Second, strings.Fields(s.cmd)...); err != nil {
			t.Fatal(err)
		}
	}
	startFtpalg(t, b, "FTPALG_MAX_SESSIONS_PER_CLIENT=2")
	greet := func(src netip.Addr) {
		t.Helper()
		if _, text := dialFromAddr(t, b, b.Client, src); !strings.HasPrefix(text, "220 ") || !strings.Contains(text, "vsFTPd") {
			t.Fatalf("from %s: %q, want vsftpd's greeting", src, text)
		}
	}
	greet(a1)
	greet(a2) // the /64's second and last session
	for _, src := range []netip.Addr{a1, a2} {
		f, text := dialFromAddr(t, b, b.Client, src)
		if text != msgClientLimit {
			t.Fatalf("third session of the /64, from %s: %q, want %q", src, text, msgClientLimit)
		}
		if rest, closed := f.rest(3 * time.Second); rest != "" || !closed {
			t.Fatalf("after the 421: %q (closed %v)", rest, closed)
		}
	}
	greet(other)
	waitMetric(t, b, `ftpalg_sessions_refused_total{reason="client_limit"}`, 2, 5*time.Second)
	t.Logf("ok: %s and %s share a cap of 2 (both refused past it); %s of another /64 served", a1, a2, other)
}
