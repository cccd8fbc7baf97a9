package tests

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// transfer is one real-client transfer case, shared by the reverse and
// sidecar suites: run it from ns against the public address.
type transfer struct {
	name   string
	run    func(out string) (string, error)
	remote string // path under the FTP root
	hash   string
	upload bool
}

// runTransfers runs each case, checks the content by SHA-256 and, after each
// session, that the ruleset in rulesNS is back to static.
func runTransfers(t *testing.T, b *bed.Bed, rulesNS, static string, cases []transfer) {
	t.Helper()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := b.ClientPath(fmt.Sprintf("x%d.bin", i))
			if msg, err := tc.run(out); err != nil {
				t.Fatalf("transfer failed: %v\n%s", err, msg)
			}
			src := out
			if tc.upload {
				src = filepath.Join(b.FTPRoot, tc.remote)
			}
			got, err := bed.HashFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.hash {
				t.Fatalf("content differs: sha256 %s, want %s", got, tc.hash)
			}
			assertCleanIn(t, b, rulesNS, static)
			t.Logf("ok: sha256 %s… matches, holes closed, ruleset back to static", got[:12])
		})
	}
}

func assertCleanIn(t *testing.T, b *bed.Bed, ns, static string) {
	t.Helper()
	var last string
	err := b.WaitFor(5*time.Second, func() bool {
		r, err := b.RulesetOf(ns)
		last = r
		return err == nil && r == static
	}, "ruleset back to the static structure")
	if err != nil {
		t.Fatalf("%v\n--- static:\n%s\n--- now:\n%s", err, static, last)
	}
}

// clientCases builds the usual matrix against the public address pub, run
// from ns: curl and lftp, passive and active, download and upload.
func clientCases(b *bed.Bed, ns string, pub netip.Addr, big, small, upload, upHash string, v6 bool) []transfer {
	get := func(path string, flags ...string) func(string) (string, error) {
		return func(out string) (string, error) {
			return b.Curl(ns, append(flags, "-o", out, bed.URL(pub, path))...)
		}
	}
	put := func(remote string, flags ...string) func(string) (string, error) {
		return func(string) (string, error) { return b.Curl(ns, append(flags, "-T", upload, bed.URL(pub, remote))...) }
	}
	lget := func(passive bool, path string) func(string) (string, error) {
		return func(out string) (string, error) {
			return b.Lftp(ns, pub, passive, fmt.Sprintf("get %s -o %s", path, out))
		}
	}
	fam := "v4"
	if v6 {
		fam = "v6"
	}
	cases := []transfer{
		{name: "curl default (EPSV) " + fam + " download", run: get("pub/big.bin"), hash: big},
		{name: "curl -P - (EPRT) " + fam + " download", run: get("pub/small.bin", "-P", "-"), hash: small},
		{name: "curl passive " + fam + " upload", run: put("incoming/up-pasv-" + fam + ".bin"), remote: "incoming/up-pasv-" + fam + ".bin", hash: upHash, upload: true},
		{name: "curl active " + fam + " upload", run: put("incoming/up-port-"+fam+".bin", "-P", "-"), remote: "incoming/up-port-" + fam + ".bin", hash: upHash, upload: true},
		{name: "lftp passive " + fam + " download", run: lget(true, "pub/big.bin"), hash: big},
		{name: "lftp active " + fam + " download", run: lget(false, "pub/small.bin"), hash: small},
	}
	if !v6 {
		cases = append(cases,
			transfer{name: "curl PASV (227) v4 download", run: get("pub/small.bin", "--disable-epsv"), hash: small},
			transfer{name: "curl PORT v4 download", run: get("pub/big.bin", "-P", "-", "--disable-eprt"), hash: big},
			// lftp connects to the address in the 227 (curl ignores it):
			// the rewritten public address must be right.
			transfer{name: "lftp PASV (227 address used) v4 download", run: func(out string) (string, error) {
				return b.Lftp(ns, pub, true, "set ftp:prefer-epsv no; set ftp:ignore-pasv-address no; get pub/big.bin -o "+out)
			}, hash: big},
		)
	}
	return cases
}

// TestReverse publishes a LAN vsftpd (stock defaults) on the gateway's
// outer address; clients on the WAN side reach it in both modes and both
// families.
func TestReverse(t *testing.T) {
	requireRoot(t)
	b, err := bed.NewWith(bed.Options{VsftpdNS: "client"}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	big := writeFile(t, b, "pub/big.bin", 8<<20)
	small := writeFile(t, b, "pub/small.bin", 1<<10)
	upload := filepath.Join(b.Dir, "upload.bin")
	upHash := writeRandom(t, upload, 2<<20)
	baseline := snapshot(t, b)
	proc := startFtpalg(t, b, "FTPALG_MODE=reverse", "FTPALG_LISTEN=:21",
		"FTPALG_UPSTREAM=192.0.2.10:21,[2001:db8:1::10]:21", "FTPALG_PINHOLE_TTL=3s")
	static := snapshot(t, b)
	outside := b.Server // the WAN host is the client here

	runTransfers(t, b, b.Gateway, static, clientCases(b, outside, bed.GwWAN4, big, small, upload, upHash, false))
	runTransfers(t, b, b.Gateway, static, clientCases(b, outside, bed.GwWAN6, big, small, upload, upHash, true))

	t.Run("passive hole: public address and pool port, only for this client, one-shot", func(t *testing.T) {
		f := dialFTP(t, b, outside, bed.GwWAN4)
		ep, err := f.pasv()
		if err != nil {
			t.Fatal(err)
		}
		if ep.Addr() != bed.GwWAN4 || ep.Port() < 50000 || ep.Port() > 50999 {
			t.Fatalf("227 announced %s, want %s and a port in 50000-50999", ep, bed.GwWAN4)
		}
		// The hole leads to vsftpd's passive port on the inside server.
		fin := natFinal(t, b, b.Gateway, bed.Server4, ep)
		mustDropListening(t, b, b.Outsider, ep, b.Client, fin, "another outside host racing the passive hole")
		usePassive(t, b, f, outside, ep, "pub")
		mustDropListening(t, b, outside, ep, b.Client, fin, "second SYN to a used hole")
		f.cmd("QUIT")
		f.close()
		assertClean(t, b, static)
	})

	t.Run("unused hole expires after the TTL", func(t *testing.T) {
		f := dialFTP(t, b, outside, bed.GwWAN4)
		ep, err := f.pasv()
		if err != nil {
			t.Fatal(err)
		}
		fin := natFinal(t, b, b.Gateway, bed.Server4, ep)
		waitHoles(t, b, b.Gateway, 0, 3*time.Second+3*time.Second)
		mustDropListening(t, b, outside, ep, b.Client, fin, "hole past its TTL")
		f.close()
		assertClean(t, b, static)
	})

	t.Run("bounce to an inside host refused", func(t *testing.T) {
		f := dialFTP(t, b, outside, bed.GwWAN4)
		for _, cmd := range []string{"PORT 192,0,2,66,195,80", "PORT 192,0,2,10,0,22", "EPRT |1|198.51.100.66|50000|"} {
			code, text, err := f.cmd(cmd)
			if err != nil || code != 501 {
				t.Fatalf("%s: got %d %q %v, want 501", cmd, code, strings.TrimSpace(text), err)
			}
		}
		if n := liveHoles(t, b); n != 0 {
			t.Fatalf("%d holes opened", n)
		}
		f.close()
	})

	t.Run("SIGTERM removes every rule", func(t *testing.T) {
		if err := proc.Signal(syscall.SIGTERM, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		if after := snapshot(t, b); after != baseline {
			t.Fatalf("rules left after SIGTERM:\n--- before:\n%s\n--- after:\n%s", baseline, after)
		}
	})
}
