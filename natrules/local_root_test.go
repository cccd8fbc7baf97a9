package natrules

import (
	"errors"
	"net"
	"testing"
	"time"
)

// A local hole (a relay's listener on the gateway itself): with LocalPorts
// set, a SYN to the range goes unanswered unless a hole admits it, and the
// hole admits one SYN, from its peer only, while the listener stays up the
// whole time. The server's namespace plays the third host: it reaches the
// gateway's client-side address through the gateway.
func TestRootLocalHoleIPv4(t *testing.T) { testLocalHole(t, false) }
func TestRootLocalHoleIPv6(t *testing.T) { testLocalHole(t, true) }

func testLocalHole(t *testing.T, v6 bool) {
	needRoot(t)
	tp := newTopo(t, v6)
	cfg := Config{IPv4: !v6, IPv6: v6, TTL: 5 * time.Second, LocalPorts: PortRange{50000, 50099}}
	m := newTestManager(t, tp.gw, cfg)
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(t.Context()) })
	const relayPort = 50005
	peers := listenAt(t, tp.gw, tp.gwC, relayPort)
	outside, outPeers := listen(t, tp.gw, tp.gwC) // an ephemeral port, outside the range

	// Without a hole nothing reaches the range, from anyone.
	mustDrop(t, tp.client, tp.gwC, relayPort, "client, no hole")
	mustDrop(t, tp.server, tp.gwC, relayPort, "third host, no hole")
	// A port outside the range is left to the operator's policy (ACCEPT here).
	if outside >= 50000 && outside <= 50099 {
		t.Skipf("ephemeral port %d fell inside the range", outside)
	}
	mustConnect(t, tp, tp.gwC, outside, outPeers, tp.cAddr)

	h := LocalHole(ad(tp.cAddr), ap2(tp.gwC, relayPort))
	if err := m.Open(ctx, h); err != nil {
		t.Fatal(err)
	}
	mustDrop(t, tp.server, tp.gwC, relayPort, "third host, hole for the client")
	mustConnect(t, tp, tp.gwC, relayPort, peers, tp.cAddr)
	mustDrop(t, tp.client, tp.gwC, relayPort, "client again, one-shot hole used")
	if err := m.Revoke(ctx, h); err != nil {
		t.Fatal(err)
	}

	// Revoked before use: closed.
	if err := m.Open(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, h); err != nil {
		t.Fatal(err)
	}
	mustDrop(t, tp.client, tp.gwC, relayPort, "client, hole revoked unused")
}

// listenAt listens in ns on addr:port; accepted peers' addresses are sent
// on the channel.
func listenAt(t *testing.T, ns *testNS, addr string, port uint16) chan string {
	t.Helper()
	var ln net.Listener
	ns.do(t, func() {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(addr, itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { ln.Close() })
	peers := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			peers <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			t.Cleanup(func() { c.Close() })
		}
	}()
	return peers
}

// mustDrop asserts a SYN from ns to addr:port goes unanswered: the dial
// times out (a refusal or reset would mean the kernel answered).
func mustDrop(t *testing.T, ns *testNS, addr string, port uint16, why string) {
	t.Helper()
	c, err := dial(t, ns, addr, port, 700*time.Millisecond)
	if err == nil {
		c.Close()
		t.Fatalf("%s: connect %s:%d succeeded, want the SYN dropped", why, addr, port)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%s: connect %s:%d: %v, want a timeout (SYN unanswered)", why, addr, port, err)
	}
}

func itoa(p uint16) string { return port(p) }
