// FTPALG_TRANSPARENT (issue 18 section 3): in reverse mode a stock vsftpd
// (pasv_promiscuous=NO, port_promiscuous=NO) sees each client's own
// address on its control and data connections, and the gateway's routing
// is exactly as before once ftpalg stops.
package tests

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// routingState is everything FTPALG_TRANSPARENT touches besides the
// ruleset: policy rules, every routing table, and the whole nftables
// ruleset (the mark rule's table), in ns.
func routingState(t *testing.T, b *bed.Bed, ns string) string {
	t.Helper()
	var sb strings.Builder
	for _, argv := range [][]string{
		{"ip", "rule"}, {"ip", "-6", "rule"},
		{"ip", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
		{"nft", "-s", "list", "ruleset"},
	} {
		out, err := b.Exec(ns, 10*time.Second, argv...)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "# %s\n", strings.Join(argv, " "))
		for _, l := range strings.Split(expires.ReplaceAllString(out, ""), "\n") {
			// The kernel's link-local routes come when the veths'
			// addresses do, some time after the bed is built.
			if !(strings.Contains(l, "fe80:") && strings.Contains(l, "proto kernel")) {
				sb.WriteString(l + "\n")
			}
		}
	}
	return sb.String()
}

var expires = regexp.MustCompile(` expires [0-9hms]+`)

// establishedPeers lists the peers of vsftpd's established connections on
// local port lport in its namespace.
func establishedPeers(t *testing.T, b *bed.Bed, lport uint16) []string {
	t.Helper()
	out, err := b.Exec(b.VsftpdNS(), 5*time.Second, "ss", "-Htn", "state", "established", fmt.Sprintf("sport = :%d", lport))
	if err != nil {
		t.Fatal(err)
	}
	var peers []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) >= 4 {
			ap, err := netip.ParseAddrPort(f[len(f)-1])
			if err != nil {
				t.Fatalf("ss line %q: %v", l, err)
			}
			peers = append(peers, ap.Addr().Unmap().String())
		}
	}
	return peers
}

// onlyPeer waits until vsftpd has an established connection on lport and
// requires every such connection to come from want.
func onlyPeer(t *testing.T, b *bed.Bed, lport uint16, want netip.Addr, what string) {
	t.Helper()
	var peers []string
	if err := b.WaitFor(5*time.Second, func() bool {
		peers = establishedPeers(t, b, lport)
		return len(peers) > 0
	}, what+": a connection at vsftpd"); err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p != want.String() {
			t.Fatalf("%s: vsftpd's peer on port %d is %s, want the client %s", what, lport, p, want)
		}
	}
	t.Logf("ok: %s: vsftpd's peer on port %d is the client %s", what, lport, want)
}

func TestTransparent(t *testing.T) {
	requireRoot(t)
	// The bed's vsftpd log is its own format: CONNECT lines name the
	// control peer, and log_ftp_protocol logs each command with it.
	b, err := bed.NewWith(bed.Options{VsftpdNS: "client", VsftpdExtra: []string{"xferlog_enable=YES", "log_ftp_protocol=YES"}}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	big := writeFile(t, b, "pub/big.bin", 1<<20)
	small := writeFile(t, b, "pub/small.bin", 1<<10)
	upload := filepath.Join(b.Dir, "upload.bin")
	upHash := writeRandom(t, upload, 256<<10)
	outside := b.Server // the WAN host is the client here
	clients := map[netip.Addr]bool{bed.Server4: true, bed.Server6: true}

	rulesBefore, routesBefore := snapshot(t, b), routingState(t, b, b.Gateway)
	proc := startFtpalg(t, b, "FTPALG_MODE=reverse", "FTPALG_LISTEN=:21", "FTPALG_TRANSPARENT=true",
		"FTPALG_UPSTREAM=192.0.2.10:21,[2001:db8:1::10]:21", "FTPALG_PINHOLE_TTL=3s")
	static := snapshot(t, b)

	t.Run("routing installed", func(t *testing.T) {
		now := routingState(t, b, b.Gateway)
		for _, want := range []string{
			"4654:\tfrom all fwmark 0x2000/0x2000 lookup 4654", // ip rule, both families
			"local default dev lo table 4654",
			"table inet ftpalg-transparent",
			"meta l4proto tcp socket transparent 1 meta mark set meta mark | 0x00002000",
		} {
			if strings.Count(now, want) < 1 {
				t.Fatalf("%q missing:\n%s", want, now)
			}
		}
	})

	runTransfers(t, b, b.Gateway, static, clientCases(b, outside, bed.GwWAN4, big, small, upload, upHash, false))
	runTransfers(t, b, b.Gateway, static, clientCases(b, outside, bed.GwWAN6, big, small, upload, upHash, true))

	t.Run("vsftpd logged only the clients' own addresses", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(b.Dir, "vsftpd.log"))
		if err != nil {
			t.Fatal(err)
		}
		// vsftpd (listen_ipv6) names IPv4 peers as mapped addresses.
		log := strings.ReplaceAll(string(data), `"::ffff:`, `"`)
		peer := regexp.MustCompile(`Client "([^"]+)"`)
		seen := map[string]int{}
		for _, m := range peer.FindAllStringSubmatch(log, -1) {
			seen[m[1]]++
			if a, err := netip.ParseAddr(m[1]); err != nil || !clients[a.Unmap()] {
				t.Fatalf("vsftpd logged client %q, not the client's own address:\n%s", m[1], log)
			}
		}
		// Every active transfer's PORT/EPRT reached vsftpd with the
		// client's address (port_promiscuous=NO would refuse another).
		for _, want := range []string{`CONNECT: Client "198.51.100.20"`, `CONNECT: Client "2001:db8:2::20"`,
			`"PORT 198,51,100,20,`, `"EPRT |1|198.51.100.20|`, `"EPRT |2|2001:db8:2::20|`,
			`OK DOWNLOAD: Client "198.51.100.20"`, `OK UPLOAD: Client "2001:db8:2::20"`} {
			if !strings.Contains(log, want) {
				t.Fatalf("vsftpd's log lacks %s:\n%s", want, log)
			}
		}
		t.Logf("ok: vsftpd log lines per client: %v", seen)
	})

	t.Run("control and passive data connections come from the client", func(t *testing.T) {
		f := dialFTP(t, b, outside, bed.GwWAN4)
		defer f.close()
		onlyPeer(t, b, 21, bed.Server4, "control")
		expect(t, f, "TYPE I", 200)
		ep, err := f.pasv()
		if err != nil {
			t.Fatal(err)
		}
		// The hole leads to vsftpd's passive port: hold the data
		// connection open (vsftpd accepts it at RETR) and look at it.
		fin := natFinal(t, b, b.Gateway, bed.Server4, ep)
		dc, err := b.Dial(outside, ep, 3*time.Second)
		if err != nil {
			t.Fatalf("data connection to %s: %v", ep, err)
		}
		defer dc.Close()
		onlyPeer(t, b, fin.Port(), bed.Server4, "passive data")
		expect(t, f, "RETR pub/small.bin", 150)
		if got := readTransfer(t, f, dc, "pub/small.bin"); got != small {
			t.Fatalf("content differs: %s, want %s", got, small)
		}
		f.cmd("QUIT")
		assertClean(t, b, static)
	})

	t.Run("active: exact one-shot hole from the server to the client's endpoint", func(t *testing.T) {
		f := dialFTP(t, b, outside, bed.GwWAN4)
		defer f.close()
		expect(t, f, "TYPE I", 200)
		ln, err := b.Listen(outside, netip.AddrPortFrom(bed.Server4, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ep := netip.MustParseAddrPort(ln.Addr().String())
		expect(t, f, fmt.Sprintf("PORT 198,51,100,20,%d,%d", ep.Port()>>8, ep.Port()&0xff), 200)
		// Only the server may use it: another inside host may not.
		mustDrop(t, b, b.Attacker, ep, "another inside host racing the active hole")
		expect(t, f, "RETR pub/small.bin", 150)
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		dc, err := ln.Accept()
		if err != nil {
			t.Fatalf("active data connection never arrived: %v", err)
		}
		// The client sees it from the address it dialled.
		if from := netip.MustParseAddrPort(dc.RemoteAddr().String()).Addr().Unmap(); from != bed.GwWAN4 {
			t.Fatalf("active data connection from %s, want the gateway's %s", from, bed.GwWAN4)
		}
		if got := readTransfer(t, f, dc, "pub/small.bin"); got != small {
			t.Fatalf("content differs: %s, want %s", got, small)
		}
		dc.Close()
		// Used: the server's second SYN to the same endpoint goes nowhere.
		mustDrop(t, b, b.VsftpdNS(), ep, "second SYN to a used active hole")
		f.cmd("QUIT")
		assertClean(t, b, static)
	})

	t.Run("SIGTERM restores routing and rules exactly", func(t *testing.T) {
		if err := proc.Signal(syscall.SIGTERM, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		if after := snapshot(t, b); after != rulesBefore {
			t.Fatalf("rules left after SIGTERM:\n--- before:\n%s\n--- after:\n%s", rulesBefore, after)
		}
		if after := routingState(t, b, b.Gateway); after != routesBefore {
			t.Fatalf("routing not restored after SIGTERM:\n--- before:\n%s\n--- after:\n%s", routesBefore, after)
		}
		t.Log("ok: ip rule, ip route show table all (both families) and nft list ruleset as before the start")
	})

	t.Run("after SIGKILL: the next start adopts, -cleanup removes exactly", func(t *testing.T) {
		env := []string{"FTPALG_MODE=reverse", "FTPALG_LISTEN=:21", "FTPALG_TRANSPARENT=true", "FTPALG_UPSTREAM=192.0.2.10:21,[2001:db8:1::10]:21"}
		for range 2 { // the second start finds the first one's routing
			p := startFtpalg(t, b, env...)
			f := dialFTP(t, b, outside, bed.GwWAN4)
			onlyPeer(t, b, 21, bed.Server4, "control")
			f.close()
			if err := p.Signal(syscall.SIGKILL, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			if now := routingState(t, b, b.Gateway); now == routesBefore {
				t.Fatal("SIGKILL removed the routing: the test proves nothing")
			}
		}
		bin, err := bed.Binary()
		if err != nil {
			t.Fatal(err)
		}
		if out, err := b.Exec(b.Gateway, 30*time.Second, bin, "-cleanup"); err != nil {
			t.Fatalf("-cleanup: %v\n%s", err, out)
		}
		if after := routingState(t, b, b.Gateway); after != routesBefore {
			t.Fatalf("routing after -cleanup:\n--- before:\n%s\n--- after:\n%s", routesBefore, after)
		}
		if after := snapshot(t, b); after != rulesBefore {
			t.Fatalf("rules left after -cleanup:\n%s", after)
		}
	})

	t.Run("routing table in use: refused at start, nothing left", func(t *testing.T) {
		// Someone else's route in table 4654: ftpalg must not route
		// through it, nor remove it at the end.
		if _, err := b.Exec(b.Gateway, 5*time.Second, "ip", "route", "add", "unreachable", "203.0.113.0/24", "table", "4654"); err != nil {
			t.Fatal(err)
		}
		before := routingState(t, b, b.Gateway)
		p, err := b.StartFtpalgAsync(b.Gateway, "FTPALG_MODE=reverse", "FTPALG_LISTEN=:21", "FTPALG_TRANSPARENT=true",
			"FTPALG_UPSTREAM=192.0.2.10:21,[2001:db8:1::10]:21")
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(15 * time.Second); err == nil {
			t.Fatalf("ftpalg exited 0 with table 4654 in use:\n%s", p.Out.String())
		}
		const want = "transparent routing: routing table 4654 is not empty"
		if !strings.Contains(p.Out.String(), want) {
			t.Fatalf("exit without %q:\n%s", want, p.Out.String())
		}
		if after := snapshot(t, b); after != rulesBefore {
			t.Fatalf("rules left after a failed start:\n%s", after)
		}
		if after := routingState(t, b, b.Gateway); after != before {
			t.Fatalf("routing changed by a failed start:\n--- before:\n%s\n--- after:\n%s", before, after)
		}
		t.Logf("ok: refused (%s), rules and routing untouched", want)
	})
}
