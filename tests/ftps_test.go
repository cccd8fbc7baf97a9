package tests

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// TestFTPS: ftpalg terminates FTPS in reverse mode in front of a stock,
// plain vsftpd; stock FTPS clients transfer byte-exact, passive and active,
// through the relay; TLS is required; the certificate is the configured one
// and a rotated one reaches the next session.
func TestFTPS(t *testing.T) {
	requireRoot(t)
	b, err := bed.NewWith(bed.Options{VsftpdNS: "client"}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	big := writeFile(t, b, "pub/big.bin", 4<<20)
	small := writeFile(t, b, "pub/small.bin", 1<<10)
	upload := filepath.Join(b.Dir, "upload.bin")
	upHash := writeRandom(t, upload, 1<<20)
	certs := newCertDir(t, b.Dir, "v1", "v2")
	env := []string{"FTPALG_MODE=reverse", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=192.0.2.10:21", "FTPALG_PINHOLE_TTL=3s",
		"FTPALG_AUTH_TLS=terminate", "FTPALG_TLS_CERT=" + certs.cert(), "FTPALG_TLS_KEY=" + certs.key(), "FTPALG_TLS_LISTEN=:990"}
	proc := startFtpalg(t, b, env...)
	static := snapshot(t, b)
	out, pub := b.Server, bed.GwWAN4 // the WAN host is the client

	t.Run("plaintext login refused", func(t *testing.T) {
		c, err := b.Dial(out, netip.AddrPortFrom(pub, 21), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		f := newFTPConn(c)
		defer f.close()
		if code, _, err := f.reply(); err != nil || code != 220 {
			t.Fatalf("greeting %d %v", code, err)
		}
		for _, cmd := range []string{"USER anonymous", "PASS test@example.com"} {
			if code, text, err := f.cmd(cmd); err != nil || code != 530 {
				t.Fatalf("%s in clear: %d %q %v, want 530", cmd, code, text, err)
			}
		}
	})

	t.Run("configured certificate, PROT C refused, rotation reaches the next session", func(t *testing.T) {
		f, _, fp := dialFTPS(t, b, out, pub)
		if fp != certs.versions["v1"] {
			t.Fatalf("served certificate %s, want the configured v1 %s", fp, certs.versions["v1"])
		}
		ftpsCmd(t, f, "USER anonymous", 331)
		ftpsCmd(t, f, "PASS test@example.com", 230)
		ftpsCmd(t, f, "EPSV", 521)
		ftpsCmd(t, f, "PBSZ 0", 200)
		ftpsCmd(t, f, "PROT C", 534)
		ftpsCmd(t, f, "CCC", 533)
		certs.point(t, "v2")
		var got string
		err := b.WaitFor(10*time.Second, func() bool {
			got = probeCert(t, b, out, pub)
			return got == certs.versions["v2"]
		}, "the rotated certificate served to a new session")
		if err != nil {
			t.Fatalf("%v: still %s", err, got)
		}
		// The session opened before the rotation goes on.
		ftpsCmd(t, f, "NOOP", 200)
		certs.point(t, "v1")
		if err := b.WaitFor(10*time.Second, func() bool { got = probeCert(t, b, out, pub); return got == certs.versions["v1"] }, "v1 again"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("implicit FTPS listener", func(t *testing.T) {
		c, err := b.Dial(out, netip.AddrPortFrom(pub, 990), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"ftp"}})
		defer tc.Close()
		f := newFTPConn(tc)
		if code, text, err := f.reply(); err != nil || code != 220 {
			t.Fatalf("greeting over implicit TLS: %d %q %v", code, text, err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "ftp" || fingerprint(tc) != certs.versions["v1"] {
			t.Fatalf("ALPN %q, certificate %s", p, fingerprint(tc))
		}
		ftpsCmd(t, f, "AUTH TLS", 503)
	})

	curl := func(flags ...string) func(string) (string, error) {
		return func(o string) (string, error) {
			return b.Curl(out, append([]string{"--ssl-reqd", "-k"}, flags...)...)
		}
	}
	list := filepath.Join(b.Dir, "list.txt")
	cases := []transfer{
		{name: "curl --ssl-reqd EPSV download", hash: big, run: func(o string) (string, error) { return curl("-o", o, bed.URL(pub, "pub/big.bin"))(o) }},
		{name: "curl --ssl-reqd PASV download", hash: small, run: func(o string) (string, error) {
			return curl("--disable-epsv", "-o", o, bed.URL(pub, "pub/small.bin"))(o)
		}},
		{name: "curl --ssl-reqd upload", remote: "incoming/up-curl.bin", hash: upHash, upload: true, run: func(o string) (string, error) {
			return curl("-T", upload, bed.URL(pub, "incoming/up-curl.bin"))(o)
		}},
		{name: "curl --ssl-reqd EPSV download, IPv6 client (family bridge)", hash: small, run: func(o string) (string, error) {
			return curl("-o", o, bed.URL(bed.GwWAN6, "pub/small.bin"))(o)
		}},
		{name: "curl implicit ftps:// download", hash: small, run: func(o string) (string, error) {
			return b.Curl(out, "-k", "-o", o, "ftps://"+pub.String()+":990/pub/small.bin")
		}},
		{name: "ftplib prot_p passive download", hash: big, run: func(o string) (string, error) { return pyRun(b, out, pub, "pasv", "get", "pub/big.bin", o, false) }},
		{name: "ftplib prot_p active (EPRT) download", hash: small, run: func(o string) (string, error) { return pyRun(b, out, pub, "eprt", "get", "pub/small.bin", o, false) }},
		{name: "ftplib prot_p active (PORT) download", hash: big, run: func(o string) (string, error) { return pyRun(b, out, pub, "port", "get", "pub/big.bin", o, false) }},
		{name: "ftplib prot_p active (PORT) upload", remote: "incoming/up-py.bin", hash: upHash, upload: true, run: func(string) (string, error) {
			return pyRun(b, out, pub, "port", "put", "incoming/up-py.bin", upload, false)
		}},
		{name: "lftp ssl-force passive download", hash: big, run: func(o string) (string, error) {
			return lftpFTPS(b, out, pub, true, "get pub/big.bin -o "+o)
		}},
		{name: "lftp ssl-force active download", hash: small, run: func(o string) (string, error) {
			return lftpFTPS(b, out, pub, false, "get pub/small.bin -o "+o)
		}},
	}
	runTransfers(t, b, b.Gateway, static, cases)

	t.Run("curl --ssl-reqd LIST", func(t *testing.T) {
		got, err := b.Curl(out, "--ssl-reqd", "-k", bed.URL(pub, "pub/"))
		if err != nil || !strings.Contains(got, "big.bin") || !strings.Contains(got, "small.bin") {
			t.Fatalf("LIST: %v\n%s", err, got)
		}
		if msg, err := pyRun(b, out, pub, "eprt", "list", "pub", list, false); err != nil {
			t.Fatalf("ftplib LIST: %v\n%s", err, msg)
		}
		if l, err := os.ReadFile(list); err != nil || !strings.Contains(string(l), "small.bin") {
			t.Fatalf("ftplib LIST: %v %q", err, l)
		}
	})

	t.Run("ABOR over TLS: the transfer ends, the session goes on", func(t *testing.T) {
		script := filepath.Join(b.Dir, "abort_tls.py")
		if err := os.WriteFile(script, []byte(pyAbortTLS), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := b.Exec(out, 30*time.Second, "python3", script, pub.String())
		if err != nil {
			t.Fatalf("%v\n%s", err, got)
		}
		// As in clear (abort_test.go): the transfer's 426, then 225 for
		// the ABOR, and the session goes on.
		if want := "data True\nabort 426\nthen 225\nnoop 200\nnlst pub/big.bin pub/small.bin\nquit 221\n"; got != want {
			t.Fatalf("got:\n%s\nwant:\n%s", got, want)
		}
	})

	t.Run("a third host cannot use a client's PROT P data port", func(t *testing.T) {
		f, _, _ := dialFTPS(t, b, out, pub)
		ftpsCmd(t, f, "USER anonymous", 331)
		ftpsCmd(t, f, "PASS test@example.com", 230)
		ftpsCmd(t, f, "PBSZ 0", 200)
		ftpsCmd(t, f, "PROT P", 200)
		port, err := f.epsv()
		if err != nil {
			t.Fatal(err)
		}
		ep := netip.AddrPortFrom(pub, port)
		mustDrop(t, b, b.Outsider, ep, "another outside host racing the PROT P data port")
		dc, err := b.Dial(out, ep, 5*time.Second)
		if err != nil {
			t.Fatalf("the client's own data connection: %v", err)
		}
		tc := tls.Client(dc, &tls.Config{InsecureSkipVerify: true})
		if _, _, err := f.cmd("RETR pub/small.bin"); err != nil {
			t.Fatal(err)
		}
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		data, err := io.ReadAll(tc)
		if err != nil {
			t.Fatal(err)
		}
		if h := bed.HashBytes(data); h != small {
			t.Fatalf("sha256 %s, want %s", h, small)
		}
		if code, text, err := f.reply(); err != nil || code != 226 {
			t.Fatalf("after the transfer: %d %q %v", code, text, err)
		}
		mustDrop(t, b, out, ep, "second SYN to a used data port")
	})

	t.Run("TLS optional: plain FTP and PROT C keep the kernel path", func(t *testing.T) {
		if err := proc.Signal(syscall.SIGTERM, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		proc = startFtpalg(t, b, append(env, "FTPALG_TLS_REQUIRED=false")...)
		for i, flags := range [][]string{nil, {"--ftp-ssl-control", "-k"}} {
			o := b.ClientPath(fmt.Sprintf("optional-%d.bin", i))
			if msg, err := b.Curl(out, append(flags, "-o", o, bed.URL(pub, "pub/big.bin"))...); err != nil {
				t.Fatalf("curl %v: %v\n%s", flags, err, msg)
			}
			if h := hashFile(t, o); h != big {
				t.Fatalf("curl %v: sha256 %s, want %s", flags, h, big)
			}
		}
		// Both went through kernel holes, none through the relay.
		if m := metricsOf(t, b, b.Gateway); m[`ftpalg_relayed_connections_total{reason="tls"}`] != 0 || m[`ftpalg_data_endpoints_total{kind="229"}`] < 2 {
			t.Fatalf("relayed %v, 229 endpoints %v", m[`ftpalg_relayed_connections_total{reason="tls"}`], m[`ftpalg_data_endpoints_total{kind="229"}`])
		}
	})

	t.Run("session reuse required", func(t *testing.T) {
		if err := proc.Signal(syscall.SIGTERM, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		startFtpalg(t, b, append(env, "FTPALG_TLS_SESSION_REUSE=required")...)
		for i, mode := range []string{"pasv", "port"} {
			o := b.ClientPath("reuse-" + mode + ".bin")
			if msg, err := pyRun(b, out, pub, mode, "get", "pub/small.bin", o, true); err != nil {
				t.Fatalf("%s, resuming client: %v\n%s", mode, err, msg)
			}
			if h := hashFile(t, o); h != small {
				t.Fatalf("%s: sha256 %s, want %s", mode, h, small)
			}
			// The data connection is refused after its handshake: the
			// client gets no byte of the file.
			o2 := b.ClientPath("noreuse-" + mode + ".bin")
			msg, err := pyRun(b, out, pub, mode, "get", "pub/small.bin", o2, false)
			if st, serr := os.Stat(o2); serr != nil || st.Size() != 0 {
				t.Fatalf("%s: a client that does not resume its TLS session got data: %v %v (%v)\n%s", mode, st, serr, err, msg)
			}
			waitMetric(t, b, `ftpalg_tls_handshakes_total{result="not_resumed"}`, float64(i+1), 5*time.Second)
			t.Logf("ok: %s: non-resuming client refused (no data): %s", mode, lastLine(msg))
		}
	})
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
