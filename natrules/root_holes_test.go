package natrules

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestRootOneShotIPv4(t *testing.T) { testOneShot(t, false, natNFT) }
func TestRootOneShotIPv6(t *testing.T) { testOneShot(t, true, natNFT) }

// TestRootOneShotIptablesFallback runs the same with the iptables NAT
// backend (what Setup falls back to without nf_tables).
func TestRootOneShotIptablesFallback(t *testing.T) { testOneShot(t, false, natIPT) }

func testOneShot(t *testing.T, v6 bool, nb natKind) {
	needRoot(t)
	tp := newTopo(t, v6)
	m := newTestManager(t, tp.gw, Config{IPv4: !v6, IPv6: v6, TTL: 30 * time.Second})
	m.structure().opts.noNFT = nb == natIPT
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if m.nb() != nb {
		t.Fatalf("NAT backend %s, want %s", m.nb(), nb)
	}
	port, peers := listen(t, tp.server, tp.sAddr)
	mustNotConnect(t, tp, tp.sAddr, port, "no hole")

	h := Hole{From: ad(tp.cAddr), To: ap2(tp.sAddr, port)}
	if err := m.Open(ctx, h); err != nil {
		t.Fatal(err)
	}
	c := mustConnect(t, tp, tp.sAddr, port, peers, tp.cAddr)
	// The established connection keeps working (conntrack carries it).
	if _, err := c.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	mustNotConnect(t, tp, tp.sAddr, port, "second SYN to a used hole")

	// The opener settles its used hole. Two openers of the same hole share
	// it: the first one's Revoke leaves it open, the last one's closes it.
	if err := m.Revoke(ctx, h); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := m.Open(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Revoke(ctx, h); err != nil {
		t.Fatal(err)
	}
	c3 := mustConnect(t, tp, tp.sAddr, port, peers, tp.cAddr)
	c3.Close()
	if err := m.Revoke(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := m.Open(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, h); err != nil {
		t.Fatal(err)
	}
	// Revoke closes an unused hole.
	mustNotConnect(t, tp, tp.sAddr, port, "revoked hole")
	if s := m.Stats(); s.Opened != s.Used+s.Revoked+s.Expired+uint64(s.Live) {
		t.Errorf("hole accounting: %+v", s)
	}

	// DNAT: connect to the gateway's client-side address lands on the server.
	dn := Hole{From: ad(tp.cAddr), To: ap2(tp.gwC, 50000), DNAT: ap2(tp.sAddr, port)}
	for range 2 { // the second Open shares the hole (TTL restarts)
		if err := m.Open(ctx, dn); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Revoke(ctx, dn); err != nil { // one opener leaves
		t.Fatal(err)
	}
	mustConnect(t, tp, tp.gwC, 50000, peers, tp.cAddr)
	mustNotConnect(t, tp, tp.gwC, 50000, "second SYN to a used DNAT hole")

	// DNAT+SNAT: the server sees the gateway's server-side address.
	ds := Hole{From: ad(tp.cAddr), To: ap2(tp.gwC, 50001), DNAT: ap2(tp.sAddr, port), SNAT: ad(tp.gwS)}
	if err := m.Open(ctx, ds); err != nil {
		t.Fatal(err)
	}
	c2 := mustConnect(t, tp, tp.gwC, 50001, peers, tp.gwS)

	// CloseSession deletes the tracked data connection.
	if err := m.CloseSession(ctx, []Hole{h, dn, ds}, []Hole{h, dn, ds}); err != nil {
		t.Fatal(err)
	}
	if n := m.Stats().Conntrack; n < 1 {
		t.Errorf("CloseSession deleted %d conntrack entries, want >= 1", n)
	}
	// With the entry gone, the next segment of the old connection is not
	// ESTABLISHED any more: it is dropped, so the write is never acked.
	c2.SetDeadline(time.Now().Add(1500 * time.Millisecond))
	c2.Write([]byte("after close"))
	if s := m.Stats(); s.Live != 0 {
		t.Errorf("live after CloseSession: %+v", s)
	}
	// GC removes the dead per-hole rules within a few seconds.
	deadline := time.Now().Add(5 * time.Second)
	for m.Stats().DeadRules > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	save := tp.gw.exec(t, map[bool]string{false: "iptables-save", true: "ip6tables-save"}[v6], "-t", "nat")
	if strings.Contains(save, "ftpalg hole") {
		t.Errorf("per-hole rules left after GC:\n%s", save)
	}
	if err := m.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRootTTL(t *testing.T) {
	needRoot(t)
	tp := newTopo(t, false)
	m := newTestManager(t, tp.gw, Config{IPv4: true, TTL: 2 * time.Second})
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	port, peers := listen(t, tp.server, tp.sAddr)
	h := Hole{From: ad(tp.cAddr), To: ap2(tp.sAddr, port)}
	dn := Hole{From: ad(tp.cAddr), To: ap2(tp.gwC, 50000), DNAT: ap2(tp.sAddr, port)}
	for _, x := range []Hole{h, dn} {
		if err := m.Open(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	// Kill the bookkeeping, as after kill -9: only the kernel's TTL is left.
	m.stopJanitor()
	time.Sleep(3100 * time.Millisecond)
	mustNotConnect(t, tp, tp.sAddr, port, "filter hole after its TTL")
	mustNotConnect(t, tp, tp.gwC, 50000, "DNAT hole after its TTL")
	// A fresh hole still works (the TTL is per entry).
	m.startJanitor()
	if err := m.Open(ctx, Hole{From: ad(tp.cAddr), To: ap2(tp.sAddr, port)}); err != nil {
		// the expired hole is still in the bookkeeping until the janitor
		// runs; refresh is fine too
		t.Fatal(err)
	}
	mustConnect(t, tp, tp.sAddr, port, peers, tp.cAddr)
	// The janitor forgets expired holes and GCs their rules.
	time.Sleep(3500 * time.Millisecond)
	if s := m.Stats(); s.Live != 0 || s.Expired < 2 || s.DeadRules != 0 {
		t.Errorf("after expiry: %+v", s)
	}
}

func TestRootCapture(t *testing.T) {
	needRoot(t)
	tp := newTopo(t, false)
	m := newTestManager(t, tp.gw, Config{IPv4: true, Capture: true, CapturePort: 21, ListenPort: 2121, CaptureIfaces: []string{"g0"}})
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	// The proxy's listener on the gateway.
	var ln net.Listener
	tp.gw.do(t, func() {
		var err error
		if ln, err = net.Listen("tcp", ":2121"); err != nil {
			t.Fatal(err)
		}
	})
	defer ln.Close()
	tp.gw.exec(t, "iptables", "-P", "INPUT", "DROP")
	tp.gw.exec(t, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	// A client's connection to any server's port 21 lands on the proxy.
	if _, err := dial(t, tp.client, tp.sAddr, 21, 2*time.Second); err != nil {
		t.Fatalf("captured control connection: %v", err)
	}
	// The listener itself is not reachable directly (INPUT DROP): only
	// redirected control connections are accepted.
	mustNotConnect(t, tp, tp.gwC, 2121, "direct connection to the listener")
}

// TestRootNFTStructure checks the ftpalg tables installed over netlink
// against nftStructure's text (what the golden files hold): nft list
// prints exactly that.
func TestRootNFTStructure(t *testing.T) {
	needRoot(t)
	needNFT(t)
	ns := newNS(t, "nfts")
	cfg := Config{IPv4: true, IPv6: true, TTL: 30 * time.Second, MaxHoles: 4096}
	m := newTestManager(t, ns, cfg)
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if m.nb() != natNFT {
		t.Fatalf("backend %s, want nftables", m.nb())
	}
	for _, f := range []Family{IPv4, IPv6} {
		want := nftStructure(m.cfg, f).Script()
		got := ns.exec(t, "nft", "-s", "list", "table", nftFamilyName(f), nftTableName)
		if got != want {
			t.Errorf("%s: installed table differs from nftStructure:\n--- nft list\n%s\n--- want\n%s", f, got, want)
		}
	}
	if err := m.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if out := ns.exec(t, "nft", "list", "tables"); strings.Contains(out, nftTableName) {
		t.Errorf("teardown left %s", out)
	}
}

func needNFT(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		tb.Skip("natrules: nft not installed")
	}
}

// TestRootShapes opens the five hole shapes the proxy uses and checks that
// each passes one connection, translated as intended, and only one. The
// SNAT addresses are secondary addresses, different from what the
// operator's MASQUERADE would pick, so the hole's SNAT must bind first.
func TestRootShapes(t *testing.T) {
	needRoot(t)
	tp := newTopo(t, false)
	gw := tp.gw
	gw.exec(t, "ip", "addr", "add", "192.0.2.3/24", "dev", "g0")    // public address
	gw.exec(t, "ip", "addr", "add", "198.51.100.3/24", "dev", "g1") // inner address
	gw.exec(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "g1", "-j", "MASQUERADE")
	gw.exec(t, "iptables", "-P", "INPUT", "DROP")
	gw.exec(t, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
	m := newTestManager(t, gw, Config{IPv4: true, TTL: 30 * time.Second})
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	cPort, cPeers := listen(t, tp.client, tp.cAddr)
	sPort, sPeers := listen(t, tp.server, tp.sAddr)
	gPort, gPeers := listen(t, gw, tp.gwC)
	const public, inner = "192.0.2.3", "198.51.100.3"
	cases := []struct {
		name  string
		hole  Hole
		from  *testNS
		to    string
		port  uint16
		peers chan string
		want  string
	}{
		{"forward active", Hole{From: ad(tp.sAddr), To: ap2(tp.gwS, 50001), DNAT: ap2(tp.cAddr, cPort)},
			tp.server, tp.gwS, 50001, cPeers, tp.sAddr},
		{"reverse passive", Hole{From: ad(tp.cAddr), To: ap2(tp.gwC, 50002), DNAT: ap2(tp.sAddr, sPort), SNAT: ad(inner)},
			tp.client, tp.gwC, 50002, sPeers, inner},
		{"reverse active", Hole{From: ad(tp.sAddr), To: ap2(tp.gwS, 50003), DNAT: ap2(tp.cAddr, cPort), SNAT: ad(public)},
			tp.server, tp.gwS, 50003, cPeers, public},
		{"sidecar passive", Hole{From: ad(tp.cAddr), To: ap2(tp.gwC, 50004), DNAT: ap2(tp.gwC, gPort), SNAT: ad(tp.gwC)},
			tp.client, tp.gwC, 50004, gPeers, tp.gwC},
		{"sidecar active", Hole{From: ad(tp.gwC), To: ap2(tp.gwC, 50005), DNAT: ap2(tp.cAddr, cPort), SNAT: ad(tp.gwC)},
			gw, tp.gwC, 50005, cPeers, tp.gwC},
	}
	for _, c := range cases {
		if _, err := dial(t, c.from, c.to, c.port, 500*time.Millisecond); err == nil {
			t.Fatalf("%s: connected before the hole was opened", c.name)
		}
		if err := m.Open(ctx, c.hole); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if _, err := dial(t, c.from, c.to, c.port, 2*time.Second); err != nil {
			t.Fatalf("%s: connect %s:%d through hole: %v", c.name, c.to, c.port, err)
		}
		select {
		case p := <-c.peers:
			if p != c.want {
				t.Errorf("%s: peer seen as %s, want %s", c.name, p, c.want)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: nothing accepted", c.name)
		}
		if _, err := dial(t, c.from, c.to, c.port, 700*time.Millisecond); err == nil {
			t.Errorf("%s: second connection through a used hole succeeded", c.name)
		}
		select {
		case p := <-c.peers:
			t.Errorf("%s: second connection accepted from %s", c.name, p)
		default:
		}
	}
	// Every element was consumed by the datapath.
	for _, mp := range []string{dnatMap(IPv4), snatMap(IPv4)} {
		if out := gw.exec(t, "nft", "list", "map", "ip", nftTableName, mp); strings.Contains(out, "elements") {
			t.Errorf("elements left after use:\n%s", out)
		}
	}
	all := func() (hs []Hole) {
		for _, c := range cases {
			hs = append(hs, c.hole)
		}
		return
	}()
	if err := m.CloseSession(ctx, all, all); err != nil {
		t.Fatal(err)
	}
	if s := m.Stats(); s.Live != 0 || s.Conntrack < 5 {
		t.Errorf("after CloseSession: %+v", s)
	}
}
