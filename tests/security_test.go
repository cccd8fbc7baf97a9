package tests

import (
	"io"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// dialFTP opens a hand-driven control connection from ns to the server, via
// the gateway's capture, and logs in.
func dialFTP(t *testing.T, b *bed.Bed, ns string, server netip.Addr) *ftpConn {
	t.Helper()
	c, err := b.Dial(ns, netip.AddrPortFrom(server, 21), 5*time.Second)
	if err != nil {
		t.Fatalf("control connection from %s: %v", ns, err)
	}
	f := newFTPConn(c)
	t.Cleanup(f.close)
	if err := f.login(); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestForwardHostile(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	if _, err := b.WriteFile("pub/f.bin", 4096); err != nil {
		t.Fatal(err)
	}
	const ttl = 3 * time.Second
	startFtpalg(t, b, "FTPALG_PINHOLE_TTL=3s")
	static := snapshot(t, b)

	t.Run("attacker cannot take another client's passive hole; hole is one-shot", func(t *testing.T) {
		f := dialFTP(t, b, b.Client, bed.Server4)
		ep, err := f.pasv()
		if err != nil {
			t.Fatal(err)
		}
		if ep.Addr() != bed.Server4 {
			t.Fatalf("forward mode must keep the server's address in 227, got %s", ep)
		}
		if n := liveHoles(t, b); n != 1 {
			t.Fatalf("want exactly 1 live hole, have %d", n)
		}
		// A passive hole in forward mode leads to the server itself.
		mustDropListening(t, b, b.Attacker, ep, b.Server, ep, "third host racing the passive hole")
		usePassive(t, b, f, b.Client, ep, "pub")
		mustDropListening(t, b, b.Client, ep, b.Server, ep, "second SYN to a used hole")
		f.cmd("QUIT")
		f.close()
		assertClean(t, b, static)
	})

	t.Run("unused passive hole expires after the TTL", func(t *testing.T) {
		f := dialFTP(t, b, b.Client, bed.Server4)
		ep, err := f.pasv()
		if err != nil {
			t.Fatal(err)
		}
		if n := liveHoles(t, b); n != 1 {
			t.Fatalf("want exactly 1 live hole after PASV, have %d", n)
		}
		waitHoles(t, b, b.Gateway, 0, ttl+3*time.Second)
		mustDropListening(t, b, b.Client, ep, b.Server, ep, "hole past its TTL")
		f.close()
		assertClean(t, b, static)
	})

	t.Run("FTP bounce and privileged ports refused with 501, nothing opened", func(t *testing.T) {
		f := dialFTP(t, b, b.Client, bed.Server4)
		for _, cmd := range []string{
			"PORT 192,0,2,66,195,80",        // the attacker: a third party
			"PORT 198,51,100,20,195,80",     // the server itself
			"PORT 192,0,2,1,195,80",         // the gateway
			"PORT 127,0,0,1,195,80",         // loopback
			"PORT 192,0,2,10,0,80",          // the client, privileged port
			"EPRT |1|192.0.2.66|50000|",     // bounce over EPRT
			"EPRT |2|2001:db8:1::66|50000|", // bounce over EPRT, IPv6 text
			"EPRT |1|192.0.2.10|21|",        // privileged port
			"PORT 192,0,2,10,256,1",         // malformed
		} {
			code, text, err := f.cmd(cmd)
			if err != nil {
				t.Fatalf("%s: %v", cmd, err)
			}
			if code != 501 {
				t.Fatalf("%s: got %d %q, want 501", cmd, code, strings.TrimSpace(text))
			}
			if n := liveHoles(t, b); n != 0 {
				t.Fatalf("%s opened %d holes", cmd, n)
			}
			t.Logf("ok: %-32s -> %s", cmd, strings.TrimSpace(text))
		}
		// The session goes on: the server never saw the refused commands.
		if code, text, err := f.cmd("NOOP"); err != nil || code != 200 {
			t.Fatalf("session broken after refusals: %d %q %v", code, text, err)
		}
		f.close()
		assertClean(t, b, static)
	})

	t.Run("attacker cannot use a client's active hole", func(t *testing.T) {
		f := dialFTP(t, b, b.Client, bed.Server4)
		ln, port, portCmd := clientListener(t, b)
		defer ln.Close()
		code, text, err := f.cmd(portCmd)
		if err != nil || code != 200 {
			t.Fatalf("PORT: %d %q %v", code, text, err)
		}
		// The NAT half of a hole is an element of the nftables map
		// "ip ftpalg dnat4": from . to-addr . to-port : dnat-addr . dnat-port.
		out, err := b.Exec(b.Gateway, 10*time.Second, "nft", "list", "map", "ip", "ftpalg", "dnat4")
		if err != nil {
			t.Fatalf("nft list map dnat4: %v %s", err, out)
		}
		var pub netip.AddrPort
		for _, mm := range regexp.MustCompile(`(\S+) \. (\S+) \. (\d+)(?: timeout \S+)?(?: expires \S+)? :`).FindAllStringSubmatch(out, -1) {
			if mm[1] == bed.Server4.String() {
				pub = netip.MustParseAddrPort(mm[2] + ":" + mm[3])
			}
		}
		if !pub.IsValid() {
			t.Fatalf("no NAT hole for the server in %s", out)
		}
		if pub.Addr() != bed.GwWAN4 {
			t.Fatalf("active hole on %s, want the gateway's outer address %s", pub, bed.GwWAN4)
		}
		// Only the server may use the hole on the gateway's outer address;
		// it leads to the client's listener, still open here.
		fin := netip.AddrPortFrom(bed.Client4, port)
		if got := natFinal(t, b, b.Gateway, bed.Server4, pub); got != fin {
			t.Fatalf("active hole %s leads to %s, want the client's listener %s", pub, got, fin)
		}
		mustDropListening(t, b, b.Attacker, pub, b.Client, fin, "third host using the client's active hole")
		code, text, err = f.cmd("LIST pub")
		if err != nil || code != 150 {
			t.Fatalf("LIST: %d %q %v", code, text, err)
		}
		ln.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(5 * time.Second))
		dc, err := ln.Accept()
		if err != nil {
			t.Fatalf("server's active data connection never arrived: %v", err)
		}
		listing, err := io.ReadAll(dc)
		dc.Close()
		if err != nil {
			t.Fatalf("reading the listing: %v", err)
		}
		if !strings.Contains(string(listing), "f.bin") {
			t.Fatalf("listing over the active connection: %q", listing)
		}
		if code, text, err := f.reply(); err != nil || code != 226 {
			t.Fatalf("after LIST: %d %q %v", code, text, err)
		}
		mustDropListening(t, b, b.Server, pub, b.Client, fin, "server reusing a used active hole")
		f.cmd("QUIT")
		f.close()
		assertClean(t, b, static)
	})

	t.Run("hostile passive reply never opens a hole", func(t *testing.T) {
		// A client that sends a 227 is breaking the protocol: the session ends.
		f := dialFTP(t, b, b.Client, bed.Server4)
		if err := f.send("227 Entering Passive Mode (192,0,2,66,195,80)\r\n"); err != nil {
			t.Fatal(err)
		}
		// The gateway must close the session (EOF or RST): a read that
		// merely times out is a session still open.
		got, closed := f.rest(5 * time.Second)
		if !closed {
			t.Fatalf("session still open 5 s after a client-sent 227 (read %q)", got)
		}
		if got != msgClosing {
			t.Fatalf("after a client-sent 227: read %q, want %q", got, msgClosing)
		}
		t.Logf("ok: client-sent 227 -> %q, session closed", strings.TrimSpace(got))
		if n := liveHoles(t, b); n != 0 {
			t.Fatalf("%d holes opened", n)
		}
		assertClean(t, b, static)
	})
}

func TestForwardUpstreamFailures(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	// 198.51.100.21 refuses port 21; 198.51.100.99 does not exist.
	for _, c := range []string{"ip addr add 198.51.100.21/24 dev eth0", "iptables -A INPUT -d 198.51.100.21 -p tcp --dport 21 -j REJECT --reject-with tcp-reset"} {
		if _, err := b.Exec(b.Server, 10*time.Second, strings.Fields(c)...); err != nil {
			t.Fatal(err)
		}
	}
	startFtpalg(t, b, "FTPALG_CONNECT_TIMEOUT=2s")
	static := snapshot(t, b)
	for _, tc := range []struct {
		name   string
		server netip.Addr
		within time.Duration
	}{
		{"refused", netip.MustParseAddr("198.51.100.21"), 2 * time.Second},
		{"unreachable", netip.MustParseAddr("198.51.100.99"), 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			c, err := b.Dial(b.Client, netip.AddrPortFrom(tc.server, 21), 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			f := newFTPConn(c)
			defer f.close()
			code, text, err := f.reply()
			took := time.Since(start)
			if err != nil || code != 421 {
				t.Fatalf("want 421, got %d %q %v", code, text, err)
			}
			if took > tc.within {
				t.Fatalf("421 after %s, want within %s", took, tc.within)
			}
			t.Logf("ok: %s server: %q after %s", tc.name, strings.TrimSpace(text), took.Round(time.Millisecond))
			assertClean(t, b, static)
		})
	}
}

func TestBadConfigLeavesNoRules(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	bin, err := bed.Binary()
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, b)
	cmd := exec.Command("ip", "netns", "exec", b.Gateway, bin)
	cmd.Env = []string{"FTPALG_MODE=bogus", "FTPALG_DATA_PORTS=10-5", "FTPALG_PINHOLE_TTL=forever", "FTPALG_LOG_FORMAT=yaml"}
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() == 0 {
		t.Fatalf("want a non-zero exit, got %v\n%s", err, out)
	}
	for _, want := range []string{"4 problems", "FTPALG_MODE=\"bogus\"", "FTPALG_DATA_PORTS=\"10-5\"", "FTPALG_PINHOLE_TTL=\"forever\"", "FTPALG_LOG_FORMAT=\"yaml\""} {
		if !strings.Contains(string(out), want) {
			t.Errorf("message lacks %q:\n%s", want, out)
		}
	}
	if after := snapshot(t, b); after != before {
		t.Fatalf("a refused configuration changed the ruleset:\n%s", after)
	}
	t.Logf("ok: refused with exit %d:\n%s", ee.ExitCode(), out)
}
