package natrules

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ftpalg/ftpalg/natrules/internal/nstest"
)

// ---- helpers for root tests: network namespaces created per test ----

func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("natrules: root-only test (needs CAP_NET_ADMIN, ip netns, iptables, ipset); run as root: go test ./natrules/")
	}
	for _, c := range []string{"ip", "iptables", "ip6tables", "iptables-restore", "iptables-save"} {
		if _, err := exec.LookPath(c); err != nil {
			tb.Skipf("natrules: %s not installed", c)
		}
	}
}

type testNS struct {
	name string
	h    netns.NsHandle
}

func sh(tb testing.TB, args ...string) string {
	tb.Helper()
	return nstest.Sh(tb, args...)
}

// newNS creates a uniquely named netns, removed on cleanup even on failure
// (nstest.New).
func newNS(tb testing.TB, tag string) *testNS {
	tb.Helper()
	ns := nstest.New(tb, tag)
	return &testNS{name: ns.Name, h: ns.Handle}
}

func (n *testNS) exec(tb testing.TB, args ...string) string {
	tb.Helper()
	return sh(tb, append([]string{"ip", "netns", "exec", n.name}, args...)...)
}

// do runs fn on a thread inside the namespace (sockets created there stay
// there).
func (n *testNS) do(tb testing.TB, fn func()) {
	tb.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		tb.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(n.h); err != nil {
		tb.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err)
		}
	}()
	fn()
}

var saveNoise = regexp.MustCompile(`(?m)^#.*\n|\[\d+:\d+\]`)

// ruleset is both families' iptables-save, without comments and counters,
// plus the set names.
func (n *testNS) ruleset(tb testing.TB) string {
	tb.Helper()
	s := n.exec(tb, "iptables-save") + n.exec(tb, "ip6tables-save")
	var sets []string
	n.do(tb, func() {
		h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
		if err != nil {
			tb.Fatal(err)
		}
		defer h.Close()
		all, err := h.IpsetListAll()
		if err != nil {
			tb.Fatal(err)
		}
		for _, x := range all {
			sets = append(sets, fmt.Sprintf("set %s entries=%d", x.SetName, len(x.Entries)))
		}
	})
	return dropEmptyTables(saveNoise.ReplaceAllString(s, "")) + strings.Join(sets, "\n") + n.nftTables(tb)
}

// An element re-added after a repair has its remaining lifetime as
// timeout: compare elements without timeouts.
var nftExpires = regexp.MustCompile(` timeout [0-9hms]+( expires [0-9hms]+)?| expires [0-9hms]+`)

// nftTables lists the ftpalg nftables tables (stateless, without the
// elements' remaining lifetimes).
func (n *testNS) nftTables(tb testing.TB) string {
	tb.Helper()
	var ts []string // in family order, whatever the creation order
	for _, l := range strings.Split(n.exec(tb, "nft", "list", "tables"), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[2] == nftTableName {
			ts = append(ts, "\n"+nftExpires.ReplaceAllString(n.exec(tb, "nft", "-s", "list", "table", f[1], f[2]), ""))
		}
	}
	slices.Sort(ts)
	return strings.Join(ts, "")
}

// dropEmptyTables removes table blocks with no rules and default ACCEPT
// policies: in nf_tables mode, merely using a table creates it, and an
// empty table is the same ruleset as none.
func dropEmptyTables(s string) string {
	var out []string
	for _, blk := range strings.SplitAfter(s, "COMMIT\n") {
		if !strings.Contains(blk, "\n-A ") && !strings.Contains(blk, "\n:FTPALG") &&
			!regexp.MustCompile(`:[A-Z]+ (DROP|REJECT)`).MatchString(blk) {
			continue
		}
		out = append(out, blk)
	}
	return strings.Join(out, "")
}

func testLogger(tb testing.TB) *slog.Logger {
	var w io.Writer = io.Discard
	if testing.Verbose() {
		w = tb.Output()
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newTestManager(tb testing.TB, ns *testNS, cfg Config) *Manager {
	tb.Helper()
	m, err := newManager(cfg, testLogger(tb), ns.h)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// topo is client ns -- gateway ns -- server ns, FORWARD policy DROP on the
// gateway (plus a foreign ESTABLISHED,RELATED accept, as any stateful
// firewall has).
type topo struct {
	client, gw, server     *testNS
	cAddr, gwC, gwS, sAddr string // client, gateway client side, gateway server side, server
}

func newTopo(t *testing.T, v6 bool) *topo {
	t.Helper()
	tp := &topo{client: newNS(t, "c"), gw: newNS(t, "g"), server: newNS(t, "s")}
	link := func(a, b *testNS, an, bn string) {
		sh(t, "ip", "link", "add", an, "netns", a.name, "type", "veth", "peer", "name", bn, "netns", b.name)
		sh(t, "ip", "-n", a.name, "link", "set", an, "up")
		sh(t, "ip", "-n", b.name, "link", "set", bn, "up")
	}
	link(tp.client, tp.gw, "c0", "g0")
	link(tp.gw, tp.server, "g1", "s0")
	if !v6 {
		tp.cAddr, tp.gwC, tp.gwS, tp.sAddr = "192.0.2.2", "192.0.2.1", "198.51.100.1", "198.51.100.2"
		sh(t, "ip", "-n", tp.client.name, "addr", "add", "192.0.2.2/24", "dev", "c0")
		sh(t, "ip", "-n", tp.gw.name, "addr", "add", "192.0.2.1/24", "dev", "g0")
		sh(t, "ip", "-n", tp.gw.name, "addr", "add", "198.51.100.1/24", "dev", "g1")
		sh(t, "ip", "-n", tp.server.name, "addr", "add", "198.51.100.2/24", "dev", "s0")
		sh(t, "ip", "-n", tp.client.name, "route", "add", "default", "via", "192.0.2.1")
		sh(t, "ip", "-n", tp.server.name, "route", "add", "default", "via", "198.51.100.1")
		tp.gw.exec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		tp.gw.exec(t, "iptables", "-P", "FORWARD", "DROP")
		tp.gw.exec(t, "iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
	} else {
		tp.cAddr, tp.gwC, tp.gwS, tp.sAddr = "2001:db8:1::2", "2001:db8:1::1", "2001:db8:2::1", "2001:db8:2::2"
		sh(t, "ip", "-n", tp.client.name, "addr", "add", "2001:db8:1::2/64", "dev", "c0", "nodad")
		sh(t, "ip", "-n", tp.gw.name, "addr", "add", "2001:db8:1::1/64", "dev", "g0", "nodad")
		sh(t, "ip", "-n", tp.gw.name, "addr", "add", "2001:db8:2::1/64", "dev", "g1", "nodad")
		sh(t, "ip", "-n", tp.server.name, "addr", "add", "2001:db8:2::2/64", "dev", "s0", "nodad")
		sh(t, "ip", "-n", tp.client.name, "-6", "route", "add", "default", "via", "2001:db8:1::1")
		sh(t, "ip", "-n", tp.server.name, "-6", "route", "add", "default", "via", "2001:db8:2::1")
		tp.gw.exec(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
		tp.gw.exec(t, "ip6tables", "-P", "FORWARD", "DROP")
		tp.gw.exec(t, "ip6tables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
		// Neighbour discovery needs the link-local addresses, which are
		// tentative until their DAD ends: a first SYN sent before that
		// is lost with its retransmission.
		deadline := time.Now().Add(5 * time.Second)
		for _, ns := range []*testNS{tp.client, tp.gw, tp.server} {
			for strings.TrimSpace(sh(t, "ip", "-n", ns.name, "-6", "addr", "show", "tentative")) != "" && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	return tp
}

// listen starts a TCP listener in ns; accepted connections' remote
// addresses are sent on the returned channel (and the conns kept open).
func listen(t *testing.T, ns *testNS, addr string) (port uint16, peers chan string) {
	t.Helper()
	var ln net.Listener
	ns.do(t, func() {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(addr, "0"))
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { ln.Close() })
	peers = make(chan string, 16)
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
	return uint16(ln.Addr().(*net.TCPAddr).Port), peers
}

// dial connects from ns; it returns the conn or the error within timeout.
func dial(t *testing.T, ns *testNS, to string, port uint16, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	var err error
	ns.do(t, func() {
		c, err = net.DialTimeout("tcp", net.JoinHostPort(to, fmt.Sprint(port)), timeout)
	})
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func mustConnect(t *testing.T, tp *topo, to string, port uint16, peers chan string, wantPeer string) net.Conn {
	t.Helper()
	c, err := dial(t, tp.client, to, port, 2*time.Second)
	if err != nil {
		t.Fatalf("connect %s:%d through hole: %v", to, port, err)
	}
	select {
	case p := <-peers:
		if p != wantPeer {
			t.Errorf("server saw peer %s, want %s", p, wantPeer)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("server accepted nothing")
	}
	return c
}

func mustNotConnect(t *testing.T, tp *topo, to string, port uint16, why string) {
	t.Helper()
	c, err := dial(t, tp.client, to, port, 700*time.Millisecond)
	if err == nil {
		c.Close()
		t.Fatalf("%s: connect %s:%d succeeded, want dropped", why, to, port)
	}
}

func ap2(a string, p uint16) netip.AddrPort { return netip.AddrPortFrom(ad(a), p) }

// ---- tests ----

func TestRootSetupTwiceTeardown(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "st")
	ns.exec(t, "iptables", "-A", "FORWARD", "-s", "203.0.113.9", "-j", "DROP")
	ns.exec(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "203.0.113.0/24", "-j", "MASQUERADE")
	ns.exec(t, "ip6tables", "-A", "FORWARD", "-s", "2001:db8:9::9", "-j", "DROP")
	before := ns.ruleset(t)

	cfg := Config{IPv4: true, IPv6: true, Capture: true, ListenPort: 2121, ProxyMark: 7, CaptureIfaces: []string{"eth1"}}
	m := newTestManager(t, ns, cfg)
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	first := ns.ruleset(t)
	if !m.Ready() {
		t.Fatal("not ready after Setup")
	}
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if second := ns.ruleset(t); second != first {
		t.Fatalf("setup twice differs:\n--- first\n%s\n--- second\n%s", first, second)
	}
	// Jumps are first in their built-in chains, the foreign rule follows.
	if !regexp.MustCompile(`-A FORWARD -m comment --comment ftpalg -j FTPALG-FORWARD\n-A FORWARD -s 203.0.113.9/32 -j DROP`).MatchString(first) {
		t.Errorf("jump not inserted first:\n%s", first)
	}
	// Holes of every kind, then teardown.
	holes := []Hole{
		{From: ad("192.0.2.10"), To: ap("203.0.113.5:40000")},
		{From: ad("203.0.113.5"), To: ap("198.51.100.1:50001"), DNAT: ap("192.0.2.10:40001"), SNAT: ad("198.51.100.1")},
		{From: ad("2001:db8::10"), To: ap("[2001:db8::5]:40000"), DNAT: ap("[2001:db8:1::5]:40000")},
	}
	for _, h := range holes {
		if err := m.Open(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if s := m.Stats(); s.Live != 3 || s.Opened != 3 {
		t.Errorf("stats %+v", s)
	}
	if err := m.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if after := ns.ruleset(t); after != before {
		t.Fatalf("teardown left a different ruleset:\n--- before\n%s\n--- after\n%s", before, after)
	}
	if m.Ready() {
		t.Error("ready after teardown")
	}
}

func TestRootOpenFailsExplicitly(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "fail")
	m := newTestManager(t, ns, Config{IPv4: true, MaxHoles: 2})
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	// A v6 hole on a v4-only manager, a conflicting hole, the cap.
	if err := m.Open(ctx, Hole{From: ad("2001:db8::1"), To: ap("[2001:db8::2]:2000")}); err == nil {
		t.Error("v6 hole accepted by v4-only manager")
	}
	h := Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:2000"), DNAT: ap("203.0.113.1:21")}
	if err := m.Open(ctx, h); err != nil {
		t.Fatal(err)
	}
	h2 := h
	h2.DNAT = ap("203.0.113.2:21")
	if err := m.Open(ctx, h2); err == nil || !strings.Contains(err.Error(), "open pinhole") {
		t.Errorf("conflicting hole: %v", err)
	}
	if err := m.Open(ctx, Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:2001")}); err != nil {
		t.Fatal(err)
	}
	if err := m.Open(ctx, Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:2002")}); err == nil {
		t.Error("MaxHoles not enforced")
	}
	// A SNAT element (keyed on the tuple after DNAT) held with other data.
	h3 := Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:2004"), DNAT: ap("203.0.113.1:21"), SNAT: ad("198.51.100.9")}
	if err := m.Revoke(ctx, Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:2001")}); err != nil {
		t.Fatal(err)
	}
	m.Revoke(ctx, h)
	if err := m.Open(ctx, h3); err != nil {
		t.Fatal(err)
	}
	h4 := h3
	h4.To, h4.SNAT = ap("198.51.100.1:2005"), ad("198.51.100.8")
	if err := m.Open(ctx, h4); err == nil || !strings.Contains(err.Error(), "conflicts") {
		t.Errorf("conflicting SNAT: %v", err)
	}
	m.Revoke(ctx, h3)
	// The kernel's message comes through: remove the nftables table
	// behind the manager's back.
	ns.exec(t, "nft", "delete", "table", "ip", nftTableName)
	m.Revoke(ctx, h)
	err := m.Open(ctx, Hole{From: ad("192.0.2.3"), To: ap("198.51.100.1:2003"), DNAT: ap("203.0.113.1:21")})
	if err == nil {
		t.Fatal("Open succeeded with its map gone")
	}
	t.Logf("error as returned: %v", err)
	if s := m.Stats(); s.Failed < 4 {
		t.Errorf("Failed=%d", s.Failed)
	}
}

// A revoke names the whole hole: a session whose hole expired and whose
// port was lent again must not close the next hole on the same key.
func TestRootRevokeOnlyItsOwnHole(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "own")
	m := newTestManager(t, ns, Config{IPv4: true})
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	old := Hole{From: ad("198.51.100.7"), To: ap("198.51.100.1:50000"), DNAT: ap("192.0.2.10:40000")}
	next := old
	next.DNAT = ap("192.0.2.66:40001")
	if err := m.Open(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := m.Open(ctx, next); err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, old); err != nil {
		t.Fatalf("late revoke of the old hole: %v", err)
	}
	if err := m.CloseSession(ctx, []Hole{old}, []Hole{old}); err != nil {
		t.Fatalf("close of the old session: %v", err)
	}
	if s := m.Stats(); s.Live != 1 {
		t.Fatalf("the other session's hole was closed by a revoke of the old one: live %d, want 1", s.Live)
	}
	if out := ns.exec(t, "ipset", "list", "FTPALG-FWD4"); !strings.Contains(out, "198.51.100.7,tcp:40001,192.0.2.66") {
		t.Fatalf("the next hole's filter entry is gone:\n%s", out)
	}
}

func TestRootRecoverFromFlush(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "fl")
	m := newTestManager(t, ns, Config{IPv4: true, IPv6: true, Capture: true, ListenPort: 2121})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	h := Hole{From: ad("192.0.2.10"), To: ap("198.51.100.1:50001"), DNAT: ap("203.0.113.5:40001"), SNAT: ad("203.0.113.1")}
	if err := m.Open(ctx, h); err != nil {
		t.Fatal(err)
	}
	want := ns.ruleset(t)
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()

	waitRecovered := func(what string, n uint64) {
		t.Helper()
		start := time.Now()
		for time.Since(start) < 8*time.Second {
			if m.Stats().Reinstalls >= n && m.Ready() && ns.ruleset(t) == want {
				t.Logf("%s: recovered after %s", what, time.Since(start).Round(10*time.Millisecond))
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: not recovered: stats %+v\n--- want\n%s\n--- have\n%s", what, m.Stats(), want, ns.ruleset(t))
	}
	ns.exec(t, "iptables", "-F")
	ns.exec(t, "iptables", "-t", "nat", "-F")
	waitRecovered("iptables -F; iptables -t nat -F", 1)

	// A firewall reload: the tables replaced wholesale without our chains.
	ns.exec(t, "sh", "-c", "printf '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n' | ip6tables-restore")
	waitRecovered("ip6tables-restore reload", 2)

	// nftables: a full flush (iptables-nft's tables go too), our table
	// deleted, a chain flushed (the maps and their elements stay).
	ns.exec(t, "nft", "flush", "ruleset")
	waitRecovered("nft flush ruleset", 3)
	ns.exec(t, "nft", "delete", "table", "ip6", nftTableName)
	waitRecovered("nft delete table ip6 ftpalg", 4)
	ns.exec(t, "nft", "flush", "chain", "ip", nftTableName, "snat_post")
	waitRecovered("nft flush chain ip ftpalg snat_post", 5)
	if !strings.Contains(want, "192.0.2.10 . 198.51.100.1 . 50001 : 203.0.113.5 . 40001") {
		t.Errorf("the live hole's dnat element is not in the recorded state:\n%s", want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// The canary's generation probe: ftpalg's own commits (NAT holes opened,
// revoked, expired in the kernel) leave it quiet; any other change to the
// ruleset, even one that spares ftpalg's structure, calls for the full
// check; and the full check still runs once fullCheckInterval has passed.
func TestRootCanaryGeneration(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "gen")
	m := newTestManager(t, ns, Config{IPv4: true, TTL: time.Second})
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if !m.genArmed() {
		t.Fatal("generation probe not armed on iptables-nft with nftables maps")
	}
	recent := time.Now()
	steps := []struct {
		name string
		do   func()
		want bool
	}{
		{"nothing", func() {}, true},
		{"NAT holes opened and revoked", func() {
			for i := range 5 {
				h := Hole{From: ad("192.0.2.10"), To: ap2("198.51.100.1", uint16(50000+i)), DNAT: ap2("203.0.113.5", uint16(40000+i))}
				if err := m.Open(ctx, h); err != nil {
					t.Fatal(err)
				}
				if i%2 == 0 {
					if err := m.Revoke(ctx, h); err != nil {
						t.Fatal(err)
					}
				}
			}
		}, true},
		{"elements timed out in the kernel", func() { time.Sleep(2500 * time.Millisecond) }, true},
		{"a foreign iptables rule", func() { ns.exec(t, "iptables", "-A", "FORWARD", "-s", "203.0.113.9", "-j", "DROP") }, false},
		{"nothing since", func() {}, true},
		{"a foreign nft table", func() { ns.exec(t, "nft", "add", "table", "inet", "other") }, false},
		{"iptables -F", func() { ns.exec(t, "iptables", "-F") }, false},
	}
	for _, s := range steps {
		s.do()
		if got := m.unchanged(recent); got != s.want {
			t.Errorf("%s: unchanged = %v, want %v", s.name, got, s.want)
		}
	}
	if m.unchanged(time.Now().Add(-fullCheckInterval)) {
		t.Error("unchanged with the last full check fullCheckInterval ago")
	}
}

func TestRootSweepAfterCrash(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "cr")
	ns.exec(t, "iptables", "-A", "FORWARD", "-s", "203.0.113.9", "-j", "DROP")
	cfg := Config{IPv4: true, IPv6: true, TTL: time.Hour}
	m1 := newTestManager(t, ns, cfg)
	ctx := t.Context()
	if err := m1.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	clean := ns.ruleset(t)
	for i := range 20 {
		h := Hole{From: ad("192.0.2.10"), To: ap2("198.51.100.1", uint16(50000+i))}
		if i%2 == 0 {
			h.DNAT = ap2("203.0.113.5", uint16(40000+i))
		}
		if err := m1.Open(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	m1.Revoke(ctx, Hole{From: ad("192.0.2.10"), To: ap2("198.51.100.1", 50000)}) // a dead rule pending GC
	// A leftover of an even older instance, in a built-in chain.
	ns.exec(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "ftpalg hole 192.0.2.99->198.51.100.9:9", "-j", "MASQUERADE")
	m1.stopJanitor() // kill -9: nothing runs any more
	crashed := ns.ruleset(t)
	if crashed == clean {
		t.Fatal("holes left no trace?")
	}
	m2 := newTestManager(t, ns, cfg)
	if err := m2.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ns.ruleset(t); got != clean {
		t.Fatalf("after restart:\n%s\n--- want exactly the static structure:\n%s", got, clean)
	}
	if err := m2.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
}

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
