package natrules

import (
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
