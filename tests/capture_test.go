package tests

// Issue 14, item 2: forward mode serves the LAN only. Capture on every
// interface (the old default) let a WAN host reach LAN FTP servers through
// the gateway, and made the gateway an open relay to any host's port 21.

import (
	"bufio"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// Forward mode with capture and no interface named is a configuration
// error: exit 2, the message names the variable and what it needs, and the
// ruleset is exactly as before.
func TestForwardNeedsCaptureIfaces(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	bin, err := bed.Binary()
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, b)
	for _, env := range [][]string{
		{"FTPALG_MODE=forward"},
		{"FTPALG_MODE=forward", "FTPALG_CAPTURE=true", "FTPALG_CAPTURE_IFACES="},
	} {
		p, err := b.Start(b.Gateway, "ftpalg", env, bin)
		if err != nil {
			t.Fatal(err)
		}
		// Either it exits, or it comes up capturing on every interface.
		if err := b.WaitFor(15*time.Second, func() bool { return !p.Running() || b.Ready() }, "exit or readiness"); err != nil {
			t.Fatal(err)
		}
		if p.Running() {
			rules := snapshot(t, b)
			p.Signal(syscall.SIGTERM, 15*time.Second)
			t.Fatalf("%v: ftpalg started, capturing on every interface:\n%s\nruleset:\n%s", env, p.Out.String(), grepLines(rules, "REDIRECT"))
		}
		err = p.Wait(time.Second)
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Fatalf("%v: want exit status 2, got %v\n%s", env, err, p.Out.String())
		}
		out := p.Out.String()
		for _, want := range []string{
			`FTPALG_CAPTURE_IFACES="": required in forward mode with FTPALG_CAPTURE=true: name the LAN interfaces`,
			"e.g. FTPALG_CAPTURE_IFACES=lan0", "or set FTPALG_CAPTURE=false if you install the REDIRECT yourself",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: message lacks %q:\n%s", env, want, out)
			}
		}
		if after := snapshot(t, b); after != before {
			t.Fatalf("%v: a refused configuration changed the ruleset:\n%s", env, after)
		}
		t.Logf("ok: %v refused with exit 2, ruleset untouched:\n%s", env, strings.TrimSpace(out))
	}
}

// countingListener accepts on addr in ns, greets with 220 and counts the
// connections: it plays a LAN FTP server that no WAN host may reach.
func countingListener(t *testing.T, b *bed.Bed, ns string, addr netip.AddrPort) *atomic.Int32 {
	t.Helper()
	ln, err := b.Listen(ns, addr)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Write([]byte("220 test listener\r\n"))
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return &n
}

// mustListen shows that something listens on port in ns (so a dropped SYN
// proves the gateway dropped it).
func mustListen(t *testing.T, b *bed.Bed, ns string, addr netip.AddrPort) {
	t.Helper()
	out, err := b.Exec(ns, 5*time.Second, "ss", "-Htln", "src", addr.String())
	if err != nil || !strings.Contains(out, "LISTEN") {
		t.Fatalf("nothing listens on %s in %s: %q %v", addr, ns, out, err)
	}
	t.Logf("listening in %s: %s", ns, strings.Join(strings.Fields(out), " "))
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// With FTPALG_CAPTURE_IFACES=lan0 (what the bed passes in forward mode):
// a WAN host's SYN to a LAN FTP server is dropped, the WAN host cannot
// make the gateway dial a third host's port 21, a REDIRECT someone else
// put on the WAN side is still not relayed, and the LAN client's FTP
// works.
func TestForwardCapturesOnlyLAN(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	hash, err := b.WriteFile("pub/f.bin", 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	// A third host, 203.0.113.20 (vsftpd's namespace, which listens on
	// every address), routed through the gateway for the outsider.
	third := netip.MustParseAddr("203.0.113.20")
	for _, c := range []struct{ ns, cmd string }{
		{b.Server, "ip addr add 203.0.113.20/32 dev eth0"},
		{b.Gateway, "ip route add 203.0.113.20/32 dev wan0"},
		{b.Gateway, "sysctl -qw net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.wan0.send_redirects=0"},
		{b.Outsider, "ip route add 203.0.113.20/32 via 198.51.100.1"},
	} {
		if _, err := b.Exec(c.ns, 10*time.Second, strings.Fields(c.cmd)...); err != nil {
			t.Fatal(err)
		}
	}
	lan4 := netip.AddrPortFrom(bed.Client4, 21)
	lan6 := netip.AddrPortFrom(bed.Client6, 21)
	seen4 := countingListener(t, b, b.Client, lan4)
	seen6 := countingListener(t, b, b.Client, lan6)
	p := startFtpalg(t, b, "FTPALG_LOG_FORMAT=json")
	static := snapshot(t, b)
	if !strings.Contains(static, "-i lan0 -p tcp -m tcp --dport 21") || strings.Contains(static, "-i wan0") {
		t.Fatalf("capture rules not restricted to lan0:\n%s", grepLines(static, "REDIRECT"))
	}

	t.Run("WAN host to a LAN FTP server: SYN dropped", func(t *testing.T) {
		for _, dst := range []netip.AddrPort{lan4, lan6} {
			mustListen(t, b, b.Client, dst)
			mustDrop(t, b, b.Outsider, dst, "WAN host to a LAN FTP server")
		}
		if n4, n6 := seen4.Load(), seen6.Load(); n4 != 0 || n6 != 0 {
			t.Fatalf("the LAN server saw %d+%d connections", n4, n6)
		}
	})

	t.Run("WAN host cannot make the gateway dial a third host", func(t *testing.T) {
		// vsftpd answers on the third address (seen from the gateway).
		c, err := b.Dial(b.Gateway, netip.AddrPortFrom(third, 21), 3*time.Second)
		if err != nil {
			t.Fatalf("the third host's FTP server does not answer: %v", err)
		}
		code, text, err := newFTPConn(c).reply()
		c.Close()
		if err != nil || code != 220 {
			t.Fatalf("third host greeting: %d %q %v", code, text, err)
		}
		mustDrop(t, b, b.Outsider, netip.AddrPortFrom(third, 21), "WAN host relayed to a third host")
	})

	t.Run("the listener port itself: only redirected connections are accepted", func(t *testing.T) {
		// ftpalg's INPUT rule accepts the listener port only for a
		// connection DNATed from port 21: straight connections meet the
		// gateway's own INPUT policy (drop), from either side.
		mustListen(t, b, b.Gateway, netip.MustParseAddrPort("0.0.0.0:2121"))
		mustListen(t, b, b.Gateway, netip.MustParseAddrPort("[::]:2121"))
		for _, c := range []struct {
			ns  string
			dst netip.Addr
		}{{b.Outsider, bed.GwWAN4}, {b.Outsider, bed.GwLAN4}, {b.Outsider, bed.GwWAN6}, {b.Attacker, bed.GwLAN4}, {b.Attacker, bed.GwLAN6}} {
			mustDrop(t, b, c.ns, netip.AddrPortFrom(c.dst, uint16(bed.ListenPort)), "straight to the listener")
		}
	})

	t.Run("LAN client's FTP works", func(t *testing.T) {
		for _, flags := range [][]string{nil, {"-P", "-"}} {
			out := b.ClientPath("f.bin")
			if msg, err := b.Curl(b.Client, append(flags, "-o", out, bed.URL(bed.Server4, "pub/f.bin"))...); err != nil {
				t.Fatalf("%v\n%s", err, msg)
			}
			if h, err := bed.HashFile(out); err != nil || h != hash {
				t.Fatalf("content differs (%v)", err)
			}
		}
		assertClean(t, b, static)
	})

	t.Run("a REDIRECT on the WAN side, not ftpalg's, is still not relayed", func(t *testing.T) {
		// An operator's own rule, or a leftover, that sends WAN FTP to the
		// listener: the kernel delivers it, ftpalg must refuse it.
		foreign := "-t nat -I PREROUTING 1 -i wan0 -p tcp --dport 21 -j REDIRECT --to-ports 2121"
		for _, ipt := range []string{"iptables", "ip6tables"} {
			if _, err := b.Exec(b.Gateway, 5*time.Second, append([]string{ipt, "-w"}, strings.Fields(foreign)...)...); err != nil {
				t.Fatal(err)
			}
		}
		defer func() {
			for _, ipt := range []string{"iptables", "ip6tables"} {
				del := strings.Replace(foreign, "-I PREROUTING 1", "-D PREROUTING", 1)
				if _, err := b.Exec(b.Gateway, 5*time.Second, append([]string{ipt, "-w"}, strings.Fields(del)...)...); err != nil {
					t.Error(err)
				}
			}
		}()
		before := scrape(t, b, b.Gateway, `ftpalg_sessions_refused_total{reason="interface"}`)
		for _, dst := range []netip.AddrPort{lan4, lan6} {
			c, err := b.Dial(b.Outsider, dst, 3*time.Second)
			if err != nil {
				t.Fatalf("the foreign REDIRECT did not deliver %s to the listener: %v", dst, err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			want := "421 Service not available: connection did not arrive on an interface the gateway serves.\r\n"
			if line != want {
				t.Fatalf("outsider to %s via a WAN REDIRECT: got %q %v, want %q", dst, line, err, want)
			}
			t.Logf("ok: outsider -> %s via a foreign WAN REDIRECT: %q", dst, strings.TrimSpace(line))
		}
		if n4, n6 := seen4.Load(), seen6.Load(); n4 != 0 || n6 != 0 {
			t.Fatalf("the LAN server saw %d+%d connections", n4, n6)
		}
		if got := scrape(t, b, b.Gateway, `ftpalg_sessions_refused_total{reason="interface"}`); got != before+2 {
			t.Fatalf(`refused{reason="interface"} = %v, want %v`, got, before+2)
		}
		if !strings.Contains(grepLines(p.Out.String(), `"msg":"session refused"`), `"reason":"arrived on an interface not in FTPALG_CAPTURE_IFACES`) {
			t.Fatalf("refusal not logged:\n%s", p.Out.String())
		}
		if n, err := b.LiveHoles(); err != nil || n != 0 {
			t.Fatalf("%d holes open (%v)", n, err)
		}
	})

	for _, l := range strings.Split(p.Out.String(), "\n") {
		if strings.Contains(l, `"session started"`) && (strings.Contains(l, bed.Outsider4.String()) || strings.Contains(l, bed.Outsider6.String())) {
			t.Fatalf("a session was relayed for the outsider: %s", l)
		}
	}
}
