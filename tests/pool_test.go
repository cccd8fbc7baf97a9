// Issue 14, items 1 and 4: a pool port is never handed to another session
// while the server it was announced to could still use it, and a passive
// port returns once its transfer is over.
package tests

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// pipelineStory is a victim that pipelines "PASV, PORT" and an attacker
// that asks for an active port next, against one server.
type pipelineStory struct {
	ctrl       netip.AddrPort // where both dial the control connection
	victimNS   string
	victim     netip.Addr
	attackerNS string
	attacker   netip.Addr
	server     netip.Addr // the hole's From: who connects to an active port
	rulesNS    string
	static     string
}

// portHole finds, in ftpalg's debug log, the gateway port of the PORT hole
// that leads to dnat ("pinhole opened" is written before the rewritten PORT
// leaves, so it is there once the server's 200 is).
func portHole(t *testing.T, b *bed.Bed, p *bed.Proc, from netip.Addr, dnat netip.AddrPort) (uint16, bool) {
	t.Helper()
	re := regexp.MustCompile(`pinhole opened.*hole="PORT ` + regexp.QuoteMeta(from.String()) + ` -> \S+:(\d+) dnat ` + regexp.QuoteMeta(dnat.String()) + `( |")`)
	var m []string
	b.WaitFor(5*time.Second, func() bool {
		m = re.FindStringSubmatch(p.Out.String())
		return m != nil
	}, "PORT hole to "+dnat.String()+" in the log")
	if m == nil {
		return 0, false
	}
	port, err := strconv.ParseUint(m[1], 10, 16)
	if err != nil {
		t.Fatalf("port %q in the log: %v", m[1], err)
	}
	return uint16(port), true
}

// dnatTargets lists the targets of the live NAT holes from a host: the
// elements "from . to . port : target . port" of the map ip ftpalg dnat4.
func dnatTargets(t *testing.T, b *bed.Bed, ns string, from netip.Addr) map[uint16]netip.AddrPort {
	t.Helper()
	out, err := b.Exec(ns, 10*time.Second, "nft", "list", "map", "ip", "ftpalg", "dnat4")
	if err != nil {
		t.Fatalf("nft list map: %v %s", err, out)
	}
	got := map[uint16]netip.AddrPort{}
	re := regexp.MustCompile(`(\S+) \. \S+ \. (\d+)(?: timeout \S+)?(?: expires \S+)? : (\S+) \. (\d+)`)
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		if m[1] != from.String() {
			continue
		}
		port, err := strconv.ParseUint(m[2], 10, 16)
		if err != nil {
			t.Fatalf("port %q in %s: %v", m[2], out, err)
		}
		got[uint16(port)] = netip.MustParseAddrPort(m[3] + ":" + m[4])
	}
	return got
}

func portCmd(ap netip.AddrPort) string {
	a := ap.Addr().As4()
	return fmt.Sprintf("PORT %d,%d,%d,%d,%d,%d", a[0], a[1], a[2], a[3], ap.Port()>>8, ap.Port()&0xff)
}

// drain accepts one connection on ln and sends what arrived on it, or ""
// when ln is closed first.
func drain(ln net.Listener) <-chan string {
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- ""
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		data, err := io.ReadAll(c)
		if err != nil {
			got <- "read error: " + err.Error()
			return
		}
		got <- bed.HashBytes(data)
	}()
	return got
}

// run plays the story: the victim's PORT hole survives the 227 of the PASV
// it pipelined before it, the attacker is not given the victim's gateway
// port, and the victim's RETR delivers the victim's file to the victim and
// nothing to the attacker.
func (st pipelineStory) run(t *testing.T, b *bed.Bed, p *bed.Proc, file, fileHash, other, otherHash string) {
	victim := dialFTP(t, b, st.victimNS, st.ctrl.Addr())
	expect(t, victim, "TYPE I", 200)
	lnV, err := b.Listen(st.victimNS, netip.AddrPortFrom(st.victim, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer lnV.Close()
	vData := netip.MustParseAddrPort(lnV.Addr().String())
	if err := victim.send("PASV\r\n" + portCmd(vData) + "\r\n"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []int{227, 200} {
		if code, text, err := victim.reply(); err != nil || code != want {
			t.Fatalf("pipelined PASV, PORT: got %d %q %v, want %d", code, text, err, want)
		}
	}
	vPort, ok := portHole(t, b, p, st.server, vData)
	if !ok {
		t.Fatalf("no PORT hole for the victim in the log:\n%s", p.Out.String())
	}
	if got, ok := dnatTargets(t, b, st.rulesNS, st.server)[vPort]; !ok || got != vData {
		t.Errorf("the victim's PORT hole %s:%d -> %s is gone after the 227 that answered the PASV sent before it (live: %v)",
			st.server, vPort, vData, dnatTargets(t, b, st.rulesNS, st.server))
	} else {
		t.Logf("ok: after 227 and 200 the victim's PORT hole %s -> gateway port %d -> %s is live", st.server, vPort, vData)
	}

	attacker := dialFTP(t, b, st.attackerNS, st.ctrl.Addr())
	expect(t, attacker, "TYPE I", 200)
	lnA, err := b.Listen(st.attackerNS, netip.AddrPortFrom(st.attacker, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer lnA.Close()
	aData := netip.MustParseAddrPort(lnA.Addr().String())
	code, text, err := attacker.cmd(portCmd(aData))
	attackerPort := false
	switch {
	case err != nil:
		t.Fatalf("attacker's PORT: %v", err)
	case code == 425:
		t.Logf("ok: attacker's PORT answered %q while the victim holds the only port", strings.TrimSpace(text))
	case code == 200:
		aPort, ok := portHole(t, b, p, st.server, aData)
		if !ok {
			t.Fatalf("attacker's PORT got 200 but no hole is in the log")
		}
		if aPort == vPort {
			t.Errorf("the attacker's PORT was given gateway port %d, which the server still holds as the victim's data endpoint", aPort)
		} else {
			t.Logf("ok: attacker's PORT given gateway port %d, the victim keeps %d", aPort, vPort)
		}
		attackerPort = true
	default:
		t.Fatalf("attacker's PORT: got %d %q", code, text)
	}

	// The victim's download: the server connects to the victim's port.
	stolen := drain(lnA)
	expect(t, victim, "RETR "+file, 150)
	lnV.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	if dc, err := lnV.Accept(); err != nil {
		t.Errorf("the victim's data connection never arrived: %v", err)
	} else {
		if got := readTransfer(t, victim, dc, file); got != fileHash {
			t.Errorf("victim received sha256 %s, want %s", got, fileHash)
		} else {
			t.Logf("ok: the victim received its own %s (sha256 %s…)", file, got[:12])
		}
		dc.Close()
	}
	select {
	case got := <-stolen:
		// Nothing may have reached the attacker's listener so far.
		t.Errorf("the attacker's listener received data during the victim's RETR: sha256 %s (the victim's file: %s)", got, fileHash)
		attackerPort = false
	default:
	}
	if attackerPort {
		// The attacker's own download still works, to its own listener.
		expect(t, attacker, "RETR "+other, 150)
		select {
		case got := <-stolen:
			if got != otherHash {
				t.Errorf("attacker's listener received sha256 %q, want its own %s (%s)", got, otherHash, other)
			}
			if c, text, err := attacker.reply(); err != nil || c != 226 {
				t.Errorf("attacker after RETR: %d %q %v", c, text, err)
			}
			t.Logf("ok: the attacker's listener received only its own %s", other)
		case <-time.After(10 * time.Second):
			t.Errorf("the attacker's own data connection never arrived")
		}
	} else if !t.Failed() {
		lnA.Close()
		if got := <-stolen; got != "" {
			t.Errorf("the attacker's listener received data: sha256 %s (the victim's file is %s)", got, fileHash)
		}
	}
	victim.cmd("QUIT")
	attacker.cmd("QUIT")
	victim.close()
	attacker.close()
	assertCleanIn(t, b, st.rulesNS, st.static)
}

// (a) Forward mode, a pool of one port.
func TestPoolPipelinedForward(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	aHash, err := b.WriteFile("pub/victim.bin", 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	oHash, err := b.WriteFile("pub/other.bin", 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	p := startFtpalg(t, b, "FTPALG_CAPTURE_IFACES=lan0", "FTPALG_DATA_PORTS=50000-50000")
	pipelineStory{
		ctrl: netip.AddrPortFrom(bed.Server4, 21), victimNS: b.Client, victim: bed.Client4,
		attackerNS: b.Attacker, attacker: bed.Attacker4, server: bed.Server4,
		rulesNS: b.Gateway, static: snapshot(t, b),
	}.run(t, b, p, "pub/victim.bin", aHash, "pub/other.bin", oHash)
}

// reverseBed publishes the LAN vsftpd on the gateway's outer address.
func reverseBed(t *testing.T, env ...string) (*bed.Bed, *bed.Proc, string) {
	t.Helper()
	b, err := bed.NewWith(bed.Options{VsftpdNS: "client"}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	p := startFtpalg(t, b, append([]string{"FTPALG_MODE=reverse", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=192.0.2.10:21"}, env...)...)
	return b, p, snapshot(t, b)
}

// (b) Reverse mode, a pool of two: every client shares the one server.
func TestPoolPipelinedReverse(t *testing.T) {
	requireRoot(t)
	b, p, static := reverseBed(t, "FTPALG_DATA_PORTS=50000-50001")
	aHash, err := b.WriteFile("pub/victim.bin", 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	oHash, err := b.WriteFile("pub/other.bin", 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	pipelineStory{
		ctrl: netip.AddrPortFrom(bed.GwWAN4, 21), victimNS: b.Server, victim: bed.Server4,
		attackerNS: b.Outsider, attacker: bed.Outsider4, server: bed.Client4,
		rulesNS: b.Gateway, static: static,
	}.run(t, b, p, "pub/victim.bin", aHash, "pub/other.bin", oHash)
}

// (c) Reverse mode, ten ports as the sidecar manifest: ten logged-in
// clients that each downloaded once do not block an eleventh.
func TestPoolReturnsAfterTransfer(t *testing.T) {
	requireRoot(t)
	b, _, static := reverseBed(t, "FTPALG_DATA_PORTS=50000-50009")
	hash, err := b.WriteFile("pub/f.bin", 128<<10)
	if err != nil {
		t.Fatal(err)
	}
	pub := bed.GwWAN4
	download := func(t *testing.T, ns string) {
		t.Helper()
		f := dialFTP(t, b, ns, pub)
		if got := retrPassive(t, b, f, ns, "pub/f.bin"); got != hash {
			t.Fatalf("sha256 %s, want %s", got, hash)
		}
		f.cmd("QUIT")
		f.close()
	}
	var idle []*ftpConn
	for i := range 10 {
		f := dialFTP(t, b, b.Server, pub)
		if got := retrPassive(t, b, f, b.Server, "pub/f.bin"); got != hash {
			t.Fatalf("session %d: sha256 %s, want %s", i, got, hash)
		}
		idle = append(idle, f)
	}
	t.Logf("ok: ten sessions from %s downloaded once and stay logged in", bed.Server4)

	t.Run("an eleventh client from another address downloads", func(t *testing.T) {
		download(t, b.Outsider)
		t.Logf("ok: %s downloaded, sha256 %s…", bed.Outsider4, hash[:12])
	})
	t.Run("an eleventh session from the same address downloads", func(t *testing.T) {
		download(t, b.Server)
		t.Logf("ok: %s downloaded again, sha256 %s…", bed.Server4, hash[:12])
	})

	// The ten now each hold an unused passive hole: that holds ports for
	// their own client only.
	for i, f := range idle {
		if _, err := f.pasv(); err != nil {
			t.Fatalf("idle session %d: %v", i, err)
		}
	}
	t.Run("unused holes of one client do not block another", func(t *testing.T) {
		download(t, b.Outsider)
		t.Logf("ok: %s downloaded while %s holds all ten ports", bed.Outsider4, bed.Server4)
	})
	t.Run("the same client's share is exhausted", func(t *testing.T) {
		f := dialFTP(t, b, b.Server, pub)
		if code, text, err := f.cmd("PASV"); err != nil || text != "425 Can't open data connection: no free data port.\r\n" {
			t.Fatalf("PASV: %d %q %v", code, text, err)
		}
		f.close()
	})
	for _, f := range idle {
		f.cmd("QUIT")
		f.close()
	}
	assertCleanIn(t, b, b.Gateway, static)
}

// A pool port freed by a revocation may go at once to the next hole for
// the same client, only once the kernel has dropped the old hole. Reverse
// mode, one port, a server that answers a pipelined "PASV, PASV" in one
// segment: the second 227 revokes the first hole and reuses its port, and
// the client's connection lands on the second endpoint.
func TestPoolReuseAfterRevoke(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	fake := startFake(t, b, netip.AddrPortFrom(bed.Outsider4, 21))
	var eps []netip.AddrPort
	arrived := make(chan int, 4)
	for i := range 2 {
		ln, err := b.Listen(b.Outsider, netip.AddrPortFrom(bed.Outsider4, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		eps = append(eps, netip.MustParseAddrPort(ln.Addr().String()))
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				arrived <- i
				c.Close()
			}
		}()
	}
	fake.set(func(c net.Conn, r *bufio.Reader) {
		for _, want := range []string{"PASV", "PASV"} {
			if l, err := fakeLine(c, r); err != nil || l != want {
				return
			}
		}
		c.Write([]byte(fmt.Sprintf("227 Entering Passive Mode (%s).\r\n227 Entering Passive Mode (%s).\r\n", tuple(eps[0]), tuple(eps[1]))))
		fakeServe(nil)(c, r)
	})
	startFtpalg(t, b, "FTPALG_MODE=reverse", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=198.51.100.66:21", "FTPALG_DATA_PORTS=50000-50000")
	static := snapshot(t, b)
	f := dialFTP(t, b, b.Server, bed.GwWAN4)
	if err := f.send("PASV\r\nPASV\r\n"); err != nil {
		t.Fatal(err)
	}
	pub := netip.AddrPortFrom(bed.GwWAN4, 50000)
	want := fmt.Sprintf("227 Entering Passive Mode (%s).\r\n", tuple(pub))
	for i := range 2 {
		if _, text, err := f.reply(); err != nil || text != want {
			t.Fatalf("227 number %d: %q %v, want %q", i+1, text, err, want)
		}
	}
	c, err := b.Dial(b.Server, pub, 3*time.Second)
	if err != nil {
		t.Fatalf("the client could not use its hole: %v", err)
	}
	c.Close()
	select {
	case i := <-arrived:
		if i != 1 {
			t.Fatalf("the connection reached the first, revoked endpoint %s", eps[0])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server never saw the data connection")
	}
	// The second endpoint's listener is still open: a forwarded SYN would
	// be answered.
	mustDropListening(t, b, b.Server, pub, b.Outsider, eps[1], "second SYN to the one-shot hole")
	if _, text, err := f.cmd("NOOP"); err != nil || text != "200 NOOP ok.\r\n" {
		t.Fatalf("NOOP: %q %v", text, err)
	}
	f.close()
	assertClean(t, b, static)
	t.Logf("ok: both 227s announce %s; the connection reached the second endpoint %s", pub, eps[1])
}
