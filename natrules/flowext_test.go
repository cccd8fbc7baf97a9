package natrules

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dstOptsHeader is an IPv6 destination-options header of 8*(1+n) bytes
// for IPV6_DSTOPTS (the kernel fills in the next header): PadN when n is
// 0, else one option of the experimental type 0x1e (RFC 4727; "skip if
// unknown"), since receivers drop more than 7 bytes of padding.
func dstOptsHeader(n int) []byte {
	h := make([]byte, 8*(1+n))
	h[1], h[2], h[3] = byte(n), 1, byte(len(h)-4)
	if n > 0 {
		h[2] = 0x1e
	}
	return h
}

// dialDstOpts connects from the client to to:port with every packet
// carrying the destination-options header opt.
func dialDstOpts(t *testing.T, tp *topo, to string, port uint16, peers chan string, opt []byte) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DSTOPTS, string(opt))
		}); err != nil {
			return err
		}
		return serr
	}}
	var c net.Conn
	var err error
	tp.client.do(t, func() { c, err = d.Dial("tcp6", net.JoinHostPort(to, fmt.Sprint(port))) })
	if err != nil {
		t.Fatalf("connect with a %d-byte destination-options header: %v", len(opt), err)
	}
	t.Cleanup(func() { c.Close() })
	select {
	case <-peers:
	case <-time.After(2 * time.Second):
		t.Fatal("server accepted nothing")
	}
	return c
}

// SYNs with an IPv6 extension header: one whose ports the flow log can
// read (an 8-byte destination-options header) is a flow like any other;
// one whose ports lie past the snapshot (a 64-byte header) is counted lost
// and makes only the holes between its two addresses walk: the log stays
// up, and holes to other addresses, or opened after it, stay exact.
func TestRootFlowLogExtHeaders(t *testing.T) {
	needRoot(t)
	tp := newTopo(t, true)
	const other = "2001:db8:2::3" // a second server address
	sh(t, "ip", "-n", tp.server.name, "addr", "add", other+"/64", "dev", "s0", "nodad")
	m := newTestManager(t, tp.gw, Config{IPv6: true, TTL: 30 * time.Second, FlowLogGroup: 2121})
	ctx := t.Context()
	tp.gw.do(t, func() {
		if _, err := EnableAccounting(); err != nil {
			t.Fatal(err)
		}
	})
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 20000)
	// use opens a hole to addr, connects through it with opt and sends the
	// payload.
	use := func(addr string, opt []byte) (Hole, net.Conn) {
		port, peers := listen(t, tp.server, addr)
		h := Hole{From: ad(tp.cAddr), To: ap2(addr, port)}
		if err := m.Open(ctx, h); err != nil {
			t.Fatal(err)
		}
		c := dialDstOpts(t, tp, addr, port, peers, opt)
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		return h, c
	}
	// Conntrack accounting may lag the write by a moment.
	bytesOf := func(h Hole) uint64 {
		var got uint64
		for deadline := time.Now().Add(2 * time.Second); got < uint64(len(payload)) && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			b, err := m.FlowBytes([]Hole{h})
			if err != nil {
				t.Fatal(err)
			}
			got = b[0]
		}
		return got
	}

	readable, c := use(tp.sAddr, dstOptsHeader(0))
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	if fs := waitFlows(t, m, readable, 1); fs[0].sport != local.Port() {
		t.Fatalf("flow from port %d, want %d", fs[0].sport, local.Port())
	}
	unreadable, _ := use(other, dstOptsHeader(7))
	deadline := time.Now().Add(2 * time.Second)
	for m.drainFlowLog(); m.Stats().FlowLost == 0 && time.Now().Before(deadline); m.drainFlowLog() {
		time.Sleep(5 * time.Millisecond)
	}
	if s := m.Stats(); !s.FlowLog || s.FlowLost != 1 || s.FlowEvents != 1 {
		t.Fatalf("stats %+v: want the log up, 1 flow, 1 message lost", s)
	}
	if len(m.flowsOf(unreadable)) != 0 {
		t.Fatalf("flows recorded for the unreadable SYN: %+v", m.flowsOf(unreadable))
	}
	if got := bytesOf(readable); got < uint64(len(payload)) || m.Stats().CtWalks != 0 {
		t.Fatalf("hole to another address: %d bytes, %d walks; want the payload by an exact lookup", got, m.Stats().CtWalks)
	}
	if got := bytesOf(unreadable); got < uint64(len(payload)) || m.Stats().CtWalks == 0 {
		t.Fatalf("unreadable hole: %d bytes, %d walks; want the payload, found by a walk", got, m.Stats().CtWalks)
	}
	walks := m.Stats().CtWalks
	later, _ := use(other, dstOptsHeader(0))
	waitFlows(t, m, later, 1)
	if got := bytesOf(later); got < uint64(len(payload)) || m.Stats().CtWalks != walks {
		t.Fatalf("hole opened after: %d bytes, %d walks (%d before); want the payload by an exact lookup", got, m.Stats().CtWalks, walks)
	}
	// Every hole settles as used (the unsure one by asking the kernel); the
	// session's cleanup deletes every connection, the unsure one's by a walk.
	all := []Hole{readable, unreadable, later}
	if err := m.CloseSession(ctx, all, all); err != nil {
		t.Fatal(err)
	}
	if s := m.Stats(); s.Used != 3 || s.Revoked != 0 || s.Conntrack != 3 || s.CtWalks <= walks || !s.FlowLog {
		t.Errorf("after cleanup %+v: want 3 used, 3 connections deleted (one by a walk), the log up", s)
	}
}
