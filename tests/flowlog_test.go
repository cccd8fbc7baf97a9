package tests

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// Flow log metrics (cmd/ftpalg/rules_metrics.go).
const (
	flowUp    = "ftpalg_flowlog_up"
	flowLost  = "ftpalg_flowlog_lost_total"
	flowConns = "ftpalg_flowlog_connections_total"
	ctWalks   = "ftpalg_conntrack_walks_total"
)

// dstOpts is an IPv6 destination-options header of 8*(1+n) bytes for
// IPV6_DSTOPTS (the kernel fills in the next header): PadN(4) when n is 0,
// else one option of the experimental type 0x1e ("skip if unknown", RFC
// 4727), since a receiver drops more than 7 bytes of padding.
func dstOpts(n int) []byte {
	h := make([]byte, 8*(1+n))
	h[1], h[2], h[3] = byte(n), 1, byte(len(h)-4)
	if n > 0 {
		h[2] = 0x1e
	}
	return h
}

// dialWithDstOpts connects from ns with every packet, the SYN first,
// carrying the destination-options header opt.
func dialWithDstOpts(b *bed.Bed, ns string, to netip.AddrPort, opt []byte) (net.Conn, error) {
	d := net.Dialer{Timeout: 3 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DSTOPTS, string(opt))
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("setsockopt IPV6_DSTOPTS: %w", serr)
		}
		return nil
	}}
	var c net.Conn
	err := b.InNS(ns, func() error {
		var err error
		c, err = d.Dial("tcp6", to.String())
		return err
	})
	return c, err
}

// epsv sends EPSV and returns the port of the 229.
func (f *ftpConn) epsv() (uint16, error) {
	code, text, err := f.cmd("EPSV")
	if err != nil || code != 229 {
		return 0, fmt.Errorf("EPSV: %d %q %v", code, text, err)
	}
	i, j := strings.Index(text, "(|||"), strings.LastIndex(text, "|)")
	if i < 0 || j < i+4 {
		return 0, fmt.Errorf("EPSV: no port in %q", text)
	}
	p, err := strconv.ParseUint(text[i+4:j], 10, 16)
	if err != nil {
		return 0, fmt.Errorf("EPSV: port in %q: %w", text, err)
	}
	return uint16(p), nil
}

// retrDstOpts fetches path over EPSV from the client, the data
// connection's packets carrying opt (none if nil), and returns the SHA-256
// of what came.
func retrDstOpts(t *testing.T, b *bed.Bed, f *ftpConn, server netip.Addr, opt []byte, path string) string {
	t.Helper()
	port, err := f.epsv()
	if err != nil {
		t.Fatal(err)
	}
	to := netip.AddrPortFrom(server, port)
	var dc net.Conn
	if opt == nil {
		dc, err = b.Dial(b.Client, to, 3*time.Second)
	} else {
		dc, err = dialWithDstOpts(b, b.Client, to, opt)
	}
	if err != nil {
		t.Fatalf("data connection with a %d-byte destination-options header: %v", len(opt), err)
	}
	defer dc.Close()
	expect(t, f, "RETR "+path, 150)
	return readTransfer(t, f, dc, path)
}

// quit ends a session and waits until the gateway has cleaned it up.
func quit(t *testing.T, b *bed.Bed, f *ftpConn) {
	t.Helper()
	expect(t, f, "QUIT", 221)
	f.close()
	waitMetric(t, b, activeSessions, 0, 10*time.Second)
}

// auditedBytes returns the byte counts of the transfer records logged so
// far, oldest first.
func auditedBytes(t *testing.T, p *bed.Proc) []float64 {
	t.Helper()
	var out []float64
	for _, r := range auditLines(p.Out.String()) {
		n, ok := r["bytes"].(float64)
		if !ok {
			t.Fatalf("transfer record without a byte count: %v", r)
		}
		out = append(out, n)
	}
	return out
}

// Issue 14, item 11: an IPv6 client whose data connections carry a
// destination-options header used to turn the flow log off (up 0 for an
// hour, every SYN lost, a conntrack table walk per lookup). The log walks
// the extension headers to the ports; a SYN whose ports it still cannot
// read (a header longer than the snapshot) costs only the exactness of its
// client's holes to that server.
func TestFlowLogIPv6ExtensionHeaders(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	const size = 200 << 10
	hash, err := b.WriteFile("pub/f.bin", size)
	if err != nil {
		t.Fatal(err)
	}
	p := startFtpalg(t, b, "FTPALG_LOG_FORMAT=json", "FTPALG_CAPTURE_IFACES=lan0")
	m0 := metricsOf(t, b, b.Gateway)
	if m0[flowUp] != 1 {
		t.Fatalf("%s = %v at start, want 1", flowUp, m0[flowUp])
	}
	// waitAudit waits for n transfer records and checks that each counted
	// the file: the byte count came from the right connection.
	waitAudit := func(t *testing.T, n int) {
		t.Helper()
		var got []float64
		if err := b.WaitFor(10*time.Second, func() bool { got = auditedBytes(t, p); return len(got) >= n }, "audit lines"); err != nil || len(got) != n {
			t.Fatalf("%d transfer records, want %d: %v", len(got), n, err)
		}
		for i, v := range got {
			if v < size || v > size*1.2 {
				t.Fatalf("transfer %d: audit bytes %v for a %d-byte file", i, v, size)
			}
		}
	}

	const holes = 20
	t.Run("destination options on every data connection", func(t *testing.T) {
		f := dialFTP(t, b, b.Client, bed.Server6)
		expect(t, f, "TYPE I", 200)
		for i := range holes {
			if got := retrDstOpts(t, b, f, bed.Server6, dstOpts(0), "pub/f.bin"); got != hash {
				t.Fatalf("transfer %d: sha256 %s, want %s", i, got, hash)
			}
		}
		quit(t, b, f)
		waitAudit(t, holes)
		m := metricsOf(t, b, b.Gateway)
		if m[flowUp] != 1 || m[flowLost] != m0[flowLost] || m[ctWalks] != m0[ctWalks] || m[flowConns]-m0[flowConns] != holes {
			t.Fatalf("after %d data connections with a destination-options header: %s %v, %s +%v, %s +%v, %s +%v; want 1, +0, +0, +%d",
				holes, flowUp, m[flowUp], flowLost, m[flowLost]-m0[flowLost], ctWalks, m[ctWalks]-m0[ctWalks], flowConns, m[flowConns]-m0[flowConns], holes)
		}
		t.Logf("ok: %d transfers (sha256 %s…) through holes with a destination-options header: flow log up, %d connections learnt, nothing lost, no table walk",
			holes, hash[:12], holes)
	})

	t.Run("a SYN the log cannot read costs only its client's holes", func(t *testing.T) {
		m1 := metricsOf(t, b, b.Gateway)
		f := dialFTP(t, b, b.Client, bed.Server6)
		expect(t, f, "TYPE I", 200)
		// 40 + 64 bytes of headers: the ports lie past the 64-byte snapshot.
		if got := retrDstOpts(t, b, f, bed.Server6, dstOpts(7), "pub/f.bin"); got != hash {
			t.Fatalf("sha256 %s, want %s", got, hash)
		}
		quit(t, b, f)
		waitAudit(t, holes+1)
		m2 := metricsOf(t, b, b.Gateway)
		if m2[flowUp] != 1 || m2[flowLost]-m1[flowLost] != 1 {
			t.Fatalf("after one unreadable SYN: %s %v, %s +%v; want 1, +1", flowUp, m2[flowUp], flowLost, m2[flowLost]-m1[flowLost])
		}
		// The other holes stay exact: plain data connections of the same
		// client, v6 and v4, walk nothing.
		for _, srv := range []netip.Addr{bed.Server6, bed.Server4} {
			f := dialFTP(t, b, b.Client, srv)
			expect(t, f, "TYPE I", 200)
			if got := retrDstOpts(t, b, f, srv, nil, "pub/f.bin"); got != hash {
				t.Fatalf("%s: sha256 %s, want %s", srv, got, hash)
			}
			quit(t, b, f)
		}
		waitAudit(t, holes+3)
		m3 := metricsOf(t, b, b.Gateway)
		if m3[flowUp] != 1 || m3[flowLost] != m2[flowLost] || m3[ctWalks] != m2[ctWalks] || m3[flowConns]-m2[flowConns] != 2 {
			t.Fatalf("plain transfers after the unreadable SYN: %s %v, %s +%v, %s +%v, %s +%v; want 1, +0, +0, +2",
				flowUp, m3[flowUp], flowLost, m3[flowLost]-m2[flowLost], ctWalks, m3[ctWalks]-m2[ctWalks], flowConns, m3[flowConns]-m2[flowConns])
		}
		t.Logf("ok: one unreadable SYN: counted lost (+1), its transfer counted by %v table walk(s), the log stayed up and later holes exact",
			m2[ctWalks]-m1[ctWalks])
	})
}
