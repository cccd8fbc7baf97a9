package tests

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// TestBridge: reverse mode in front of an IPv4-only vsftpd (stock
// settings, listen=YES without IPv6), FTPALG_UPSTREAM naming only its IPv4
// address. IPv6 clients on the WAN are served through the family bridge,
// their data relayed; IPv4 clients keep the kernel path. The gateway's
// INPUT policy is ACCEPT here, so the relay ports are closed to third
// hosts by ftpalg's own rules only.
func TestBridge(t *testing.T) {
	requireRoot(t)
	b, err := bed.NewWith(bed.Options{VsftpdNS: "client", VsftpdExtra: []string{"listen=YES", "listen_ipv6=NO"}}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if out, err := os.ReadFile(filepath.Join(b.Dir, "vsftpd.log")); err == nil {
				t.Logf("vsftpd log:\n%s", out)
			}
		}
		b.Close()
	})
	const bigSize = 4 << 20
	big := writeFile(t, b, "pub/big.bin", bigSize)
	small := writeFile(t, b, "pub/small.bin", 1<<10)
	upload := filepath.Join(b.Dir, "upload.bin")
	upHash := writeRandom(t, upload, 1<<20)
	for _, ipt := range []string{"iptables", "ip6tables"} {
		if out, err := b.Exec(b.Gateway, 5*time.Second, ipt, "-w", "-P", "INPUT", "ACCEPT"); err != nil {
			t.Fatalf("%s: %v %s", ipt, err, out)
		}
	}
	proc := startFtpalg(t, b, "FTPALG_MODE=reverse", "FTPALG_LISTEN=:21",
		"FTPALG_UPSTREAM=192.0.2.10:21", "FTPALG_PINHOLE_TTL=5s")
	static := snapshot(t, b)
	outside := b.Server // the WAN host is the client
	v6, v4 := bed.GwWAN6, bed.GwWAN4

	get := func(path string, flags ...string) func(string) (string, error) {
		return func(out string) (string, error) {
			return b.Curl(outside, append(flags, "-o", out, bed.URL(v6, path))...)
		}
	}
	put := func(remote string, flags ...string) func(string) (string, error) {
		return func(string) (string, error) {
			return b.Curl(outside, append(flags, "-T", upload, bed.URL(v6, remote))...)
		}
	}
	lget := func(passive bool, path string) func(string) (string, error) {
		return func(out string) (string, error) {
			return b.Lftp(outside, v6, passive, fmt.Sprintf("get %s -o %s", path, out))
		}
	}
	relayed := func() float64 {
		return metricsOf(t, b, b.Gateway)[`ftpalg_relayed_connections_total{reason="family"}`]
	}
	before := relayed()
	runTransfers(t, b, b.Gateway, static, []transfer{
		{name: "curl EPSV v6 download", run: get("pub/big.bin"), hash: big},
		{name: "curl EPRT (-P -) v6 download", run: get("pub/small.bin", "-P", "-"), hash: small},
		{name: "curl EPSV v6 upload", run: put("incoming/up-epsv.bin"), remote: "incoming/up-epsv.bin", hash: upHash, upload: true},
		{name: "curl EPRT (--ftp-port) v6 upload", run: put("incoming/up-eprt.bin", "--ftp-port", "-"), remote: "incoming/up-eprt.bin", hash: upHash, upload: true},
		{name: "lftp passive v6 download", run: lget(true, "pub/big.bin"), hash: big},
		{name: "lftp active v6 download", run: lget(false, "pub/small.bin"), hash: small},
	})
	if n := relayed() - before; n != 6 {
		t.Errorf("ftpalg_relayed_connections_total{reason=\"family\"} grew by %v over six relayed transfers, want 6", n)
	}

	t.Run("python ftplib LIST, STOR, RETR, passive and active", func(t *testing.T) {
		for _, passive := range []bool{true, false} {
			remote := fmt.Sprintf("incoming/py-%v.bin", passive)
			out := b.ClientPath(fmt.Sprintf("py-%v.bin", passive))
			res, err := b.Exec(outside, 60*time.Second, "python3", "-c", ftplibScript, v6.String(), strconv.FormatBool(passive), upload, remote, out)
			if err != nil {
				t.Fatalf("ftplib (passive %v): %v\n%s", passive, err, res)
			}
			if !strings.Contains(res, "LIST:") || !strings.Contains(res, "big.bin") {
				t.Fatalf("ftplib LIST of pub/ lacks big.bin:\n%s", res)
			}
			if got := hashFile(t, filepath.Join(b.FTPRoot, remote)); got != upHash {
				t.Fatalf("STOR: server has sha256 %s, want %s", got, upHash)
			}
			if got := hashFile(t, out); got != upHash {
				t.Fatalf("RETR of the upload: sha256 %s, want %s", got, upHash)
			}
			assertClean(t, b, static)
		}
	})

	t.Run("a third host cannot use the client's relay port", func(t *testing.T) {
		f := dialFTP(t, b, outside, v6)
		expect(t, f, "TYPE I", 200)
		text := expect(t, f, "EPSV", 229)
		ep := netip.AddrPortFrom(v6, epsvPort(t, text))
		if ep.Port() < 50000 || ep.Port() > 50999 {
			t.Fatalf("229 announced port %d, want one of the pool 50000-50999", ep.Port())
		}
		// The relay listens on the port the whole time: a refusal would
		// be the kernel answering, a timeout is the SYN dropped.
		if !listening(t, b, ep) {
			t.Fatalf("no relay listener on %s", ep)
		}
		mustDrop(t, b, b.Outsider, ep, "an outside host racing the client's relay port")
		if !listening(t, b, ep) {
			t.Fatalf("relay listener on %s gone after the third host's SYN", ep)
		}
		dc, err := b.Dial(outside, ep, 3*time.Second)
		if err != nil {
			t.Fatalf("client's data connection to %s: %v", ep, err)
		}
		expect(t, f, "RETR pub/big.bin", 150)
		if got := readTransfer(t, f, dc, "pub/big.bin"); got != big {
			t.Fatalf("relayed RETR: sha256 %s, want %s", got, big)
		}
		dc.Close()
		mustDrop(t, b, outside, ep, "the client's second SYN to a used relay port")
		f.cmd("QUIT")
		f.close()
		assertClean(t, b, static)
	})

	t.Run("active: only the server reaches the relay's server-side port", func(t *testing.T) {
		f := dialFTP(t, b, outside, v6)
		expect(t, f, "TYPE I", 200)
		ln, err := b.Listen(outside, netip.AddrPortFrom(bed.Server6, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		expect(t, f, fmt.Sprintf("EPRT |2|%s|%d|", bed.Server6, port), 200)
		// The relay listens on the gateway's LAN address for vsftpd.
		var inner netip.AddrPort
		for _, m := range fwdMembers(t, b) {
			if a, p, ok := parseMember(m); ok && a == bed.GwLAN4 {
				inner = netip.AddrPortFrom(a, p)
			}
		}
		if !inner.IsValid() {
			t.Fatalf("no local hole to %s in FTPALG-FWD4: %v", bed.GwLAN4, fwdMembers(t, b))
		}
		mustDrop(t, b, b.Attacker, inner, "a LAN host racing the server's relay port")
		expect(t, f, "RETR pub/small.bin", 150)
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		dc, err := ln.Accept()
		if err != nil {
			t.Fatalf("relayed active data connection never arrived: %v", err)
		}
		if got := readTransfer(t, f, dc, "pub/small.bin"); got != small {
			t.Fatalf("relayed active RETR: sha256 %s, want %s", got, small)
		}
		dc.Close()
		f.cmd("QUIT")
		f.close()
		assertClean(t, b, static)
	})

	t.Run("the audit line marks a relayed transfer and counts its bytes", func(t *testing.T) {
		line := regexp.MustCompile(`msg=transfer .*command=RETR file=pub/big.bin .*bytes=` + strconv.Itoa(bigSize) + `.*relayed=family`)
		err := b.WaitFor(5*time.Second, func() bool { return line.MatchString(proc.Out.String()) }, "a relayed RETR audit line")
		if err != nil {
			t.Fatalf("%v; ftpalg output:\n%s", err, proc.Out.String())
		}
		if v := metricsOf(t, b, b.Gateway)[`ftpalg_relayed_bytes_total{reason="family"}`]; v < 3*bigSize {
			t.Fatalf("ftpalg_relayed_bytes_total{reason=\"family\"} %v, want at least %d", v, 3*bigSize)
		}
	})

	t.Run("IPv4 clients keep the kernel path", func(t *testing.T) {
		before := relayed()
		runTransfers(t, b, b.Gateway, static, []transfer{
			{name: "curl EPSV v4 download", run: func(out string) (string, error) { return b.Curl(outside, "-o", out, bed.URL(v4, "pub/big.bin")) }, hash: big},
			{name: "curl PORT v4 download", run: func(out string) (string, error) {
				return b.Curl(outside, "-P", "-", "--disable-eprt", "-o", out, bed.URL(v4, "pub/small.bin"))
			}, hash: small},
		})
		if n := relayed() - before; n != 0 {
			t.Fatalf("%v IPv4 transfers relayed, want none", n)
		}
		f := dialFTP(t, b, outside, v4)
		ep, err := f.pasv()
		if err != nil {
			t.Fatal(err)
		}
		// A NAT hole: the gateway translates, nobody listens on it.
		if listening(t, b, netip.AddrPortFrom(v4, ep.Port())) {
			t.Fatalf("something listens on %s: an IPv4 session was relayed", ep)
		}
		if fin := natFinal(t, b, b.Gateway, bed.Server4, ep); !fin.IsValid() {
			t.Fatalf("no DNAT element for %s", ep)
		}
		f.close()
	})
}

// ftplibScript: argv = host, passive, local file to STOR, remote path,
// local file to RETR it back into. LIST of pub/ is printed.
const ftplibScript = `
import ftplib, sys
host, passive, src, remote, out = sys.argv[1], sys.argv[2] == "true", sys.argv[3], sys.argv[4], sys.argv[5]
f = ftplib.FTP()
f.connect(host, 21, timeout=20)
f.login()
f.set_pasv(passive)
lines = []
f.retrlines("LIST pub", lines.append)
print("LIST:\n" + "\n".join(lines))
with open(src, "rb") as fh:
    f.storbinary("STOR " + remote, fh)
with open(out, "wb") as fh:
    f.retrbinary("RETR " + remote, fh.write)
f.quit()
`

var epsvRE = regexp.MustCompile(`\(\|\|\|(\d+)\|\)`)

func epsvPort(t *testing.T, text string) uint16 {
	t.Helper()
	m := epsvRE.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("not a 229: %q", text)
	}
	p, err := strconv.Atoi(m[1])
	if err != nil || p <= 0 || p > 65535 {
		t.Fatalf("229 port %q", m[1])
	}
	return uint16(p)
}

// listening says whether a socket listens on ap in the gateway.
func listening(t *testing.T, b *bed.Bed, ap netip.AddrPort) bool {
	t.Helper()
	out, err := b.Exec(b.Gateway, 5*time.Second, "ss", "-Htln", "sport = :"+strconv.Itoa(int(ap.Port())))
	if err != nil {
		t.Fatalf("ss: %v %s", err, out)
	}
	return strings.TrimSpace(out) != ""
}

// parseMember reads "src,tcp:port,dst" (an ipset hash:ip,port,ip member)
// and returns dst and port.
func parseMember(m string) (netip.Addr, uint16, bool) {
	f := strings.Split(strings.Fields(m)[0], ",")
	if len(f) != 3 {
		return netip.Addr{}, 0, false
	}
	p, err := strconv.Atoi(strings.TrimPrefix(f[1], "tcp:"))
	a, aerr := netip.ParseAddr(f[2])
	if err != nil || aerr != nil {
		return netip.Addr{}, 0, false
	}
	return a, uint16(p), true
}

// TestBridgeSidecar: sidecar mode, the pod's vsftpd IPv4-only on
// 127.0.0.1:2121 (FTPALG_UPSTREAM=127.0.0.1:2121), an IPv6 client routed
// to the pod: bridged, the relay reaching vsftpd on loopback. The pod has
// no INPUT policy of its own; ftpalg's DROP keeps its relay ports closed.
func TestBridgeSidecar(t *testing.T) {
	requireRoot(t)
	b, err := bed.NewWith(bed.Options{VsftpdNS: "client", VsftpdPort: 2121, VsftpdExtra: []string{"listen=YES", "listen_ipv6=NO"}}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	// The node routes the pod's IPv6 address (a dual-stack pod network).
	for _, r := range []string{
		"ip6tables -w -A FORWARD -d 2001:db8:1::10 -p tcp -j ACCEPT",
		"ip6tables -w -A FORWARD -s 2001:db8:1::10 -j ACCEPT",
	} {
		if out, err := b.Exec(b.Gateway, 10*time.Second, strings.Fields(r)...); err != nil {
			t.Fatalf("%s: %v %s", r, err, out)
		}
	}
	p, err := b.StartFtpalgIn(b.Client, "FTPALG_MODE=sidecar", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=127.0.0.1:2121",
		"FTPALG_DATA_PORTS=30000-30009", "FTPALG_PINHOLE_TTL=3s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ftpalg output:\n%s", p.Out.String())
		}
	})
	pod, outside := b.Client, b.Server
	static, err := b.RulesetOf(pod)
	if err != nil {
		t.Fatal(err)
	}
	big := writeFile(t, b, "pub/big.bin", 2<<20)
	upload := filepath.Join(b.Dir, "upload.bin")
	upHash := writeRandom(t, upload, 512<<10)
	podAddr := bed.Client6
	runTransfers(t, b, pod, static, []transfer{
		{name: "curl EPSV v6 download", run: func(out string) (string, error) { return b.Curl(outside, "-o", out, bed.URL(podAddr, "pub/big.bin")) }, hash: big},
		{name: "curl EPRT v6 download", run: func(out string) (string, error) {
			return b.Curl(outside, "-P", "-", "-o", out, bed.URL(podAddr, "pub/big.bin"))
		}, hash: big},
		{name: "curl EPSV v6 upload", run: func(string) (string, error) {
			return b.Curl(outside, "-T", upload, bed.URL(podAddr, "incoming/up.bin"))
		}, remote: "incoming/up.bin", hash: upHash, upload: true},
	})

	t.Run("a third host cannot use the client's relay port", func(t *testing.T) {
		c, err := b.Dial(outside, netip.AddrPortFrom(podAddr, 21), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		f := newFTPConn(c)
		defer f.close()
		if err := f.login(); err != nil {
			t.Fatal(err)
		}
		ep := netip.AddrPortFrom(podAddr, epsvPort(t, expect(t, f, "EPSV", 229)))
		mustDrop(t, b, b.Outsider, ep, "an outside host racing the client's relay port in the pod")
		dc, err := b.Dial(outside, ep, 3*time.Second)
		if err != nil {
			t.Fatalf("client's data connection to %s: %v", ep, err)
		}
		expect(t, f, "TYPE I", 200)
		expect(t, f, "RETR pub/big.bin", 150)
		if got := readTransfer(t, f, dc, "pub/big.bin"); got != big {
			t.Fatalf("relayed RETR: sha256 %s, want %s", got, big)
		}
		dc.Close()
		f.cmd("QUIT")
		assertCleanIn(t, b, pod, static)
	})
}
