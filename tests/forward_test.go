// End-to-end tests of forward (gateway) mode: a real vsftpd with stock
// promiscuity defaults behind a default-deny NAT gateway running ftpalg, and
// real curl and lftp clients on the LAN.
package tests

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("end-to-end tests need root (network namespaces, iptables): run `sudo make test`")
	}
	for _, tool := range []string{"vsftpd", "lftp", "curl", "iptables", "ip6tables", "ipset", "nft", "conntrack", "ip", "ss"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: `make test` installs it (make deps)", tool)
		}
	}
}

// newBed builds a bed and removes it at the end of the test, also on failure.
func newBed(t *testing.T) *bed.Bed {
	t.Helper()
	b, err := bed.New(t.Logf)
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
	return b
}

func startFtpalg(t *testing.T, b *bed.Bed, env ...string) *bed.Proc {
	t.Helper()
	p, err := b.StartFtpalg(env...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ftpalg output:\n%s", p.Out.String())
		}
	})
	return p
}

func snapshot(t *testing.T, b *bed.Bed) string {
	t.Helper()
	r, err := b.Ruleset()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// assertClean waits until every hole is gone and the ruleset is back to the
// static structure.
func assertClean(t *testing.T, b *bed.Bed, static string) {
	t.Helper()
	var last string
	err := b.WaitFor(5*time.Second, func() bool {
		last = snapshot(t, b)
		return last == static
	}, "ruleset back to the static structure")
	if err != nil {
		t.Fatalf("%v\n--- static:\n%s\n--- now:\n%s", err, static, last)
	}
}

func TestForwardTransfers(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	small, err := b.WriteFile("pub/small.bin", 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	big, err := b.WriteFile("pub/big.bin", 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	baseline := snapshot(t, b)
	proc := startFtpalg(t, b)
	static := snapshot(t, b)
	if static == baseline {
		t.Fatal("ftpalg installed no rules")
	}
	for _, want := range []string{"-j FTPALG-FORWARD", "-j FTPALG-PREROUTING", "--to-ports 2121", "set FTPALG-FWD4: ", "set FTPALG-FWD6: "} {
		if !strings.Contains(static, want) {
			t.Errorf("static structure lacks %q:\n%s", want, static)
		}
	}

	type xfer struct {
		name   string
		server netip.Addr
		run    func(out string) (string, error) // returns command output
		file   string                           // remote file to compare, "" for listings
		hash   string
		upload bool
	}
	srv4, srv6 := bed.Server4, bed.Server6
	curlGet := func(srv netip.Addr, path string, flags ...string) func(string) (string, error) {
		return func(out string) (string, error) {
			return b.Curl(b.Client, append(flags, "-o", out, bed.URL(srv, path))...)
		}
	}
	curlPut := func(srv netip.Addr, local, remote string, flags ...string) func(string) (string, error) {
		return func(string) (string, error) {
			return b.Curl(b.Client, append(flags, "-T", local, bed.URL(srv, remote))...)
		}
	}
	lftpGet := func(srv netip.Addr, passive bool, path string) func(string) (string, error) {
		return func(out string) (string, error) {
			return b.Lftp(b.Client, srv, passive, fmt.Sprintf("get %s -o %s", path, out))
		}
	}
	lftpPut := func(srv netip.Addr, passive bool, local, remote string) func(string) (string, error) {
		return func(string) (string, error) {
			return b.Lftp(b.Client, srv, passive, fmt.Sprintf("put %s -o %s", local, remote))
		}
	}
	upload := filepath.Join(b.Dir, "upload.bin")
	upHash := writeRandom(t, upload, 3<<20)

	cases := []xfer{
		{name: "curl default (EPSV) v4 download", server: srv4, run: curlGet(srv4, "pub/big.bin"), file: "pub/big.bin", hash: big},
		{name: "curl PASV v4 download", server: srv4, run: curlGet(srv4, "pub/small.bin", "--disable-epsv"), file: "pub/small.bin", hash: small},
		{name: "curl -P - (EPRT) v4 download", server: srv4, run: curlGet(srv4, "pub/big.bin", "-P", "-"), file: "pub/big.bin", hash: big},
		{name: "curl -P - PORT v4 download", server: srv4, run: curlGet(srv4, "pub/small.bin", "-P", "-", "--disable-eprt"), file: "pub/small.bin", hash: small},
		{name: "curl passive v4 upload", server: srv4, run: curlPut(srv4, upload, "incoming/curl-pasv.bin"), file: "incoming/curl-pasv.bin", hash: upHash, upload: true},
		{name: "curl active v4 upload", server: srv4, run: curlPut(srv4, upload, "incoming/curl-port.bin", "-P", "-"), file: "incoming/curl-port.bin", hash: upHash, upload: true},
		{name: "lftp passive v4 download", server: srv4, run: lftpGet(srv4, true, "pub/big.bin"), file: "pub/big.bin", hash: big},
		{name: "lftp active v4 download", server: srv4, run: lftpGet(srv4, false, "pub/big.bin"), file: "pub/big.bin", hash: big},
		{name: "lftp passive v4 upload", server: srv4, run: lftpPut(srv4, true, upload, "incoming/lftp-pasv.bin"), file: "incoming/lftp-pasv.bin", hash: upHash, upload: true},
		{name: "lftp active v4 upload", server: srv4, run: lftpPut(srv4, false, upload, "incoming/lftp-port.bin"), file: "incoming/lftp-port.bin", hash: upHash, upload: true},
		{name: "curl default (EPSV) v6 download", server: srv6, run: curlGet(srv6, "pub/big.bin"), file: "pub/big.bin", hash: big},
		{name: "curl -P - (EPRT) v6 download", server: srv6, run: curlGet(srv6, "pub/small.bin", "-P", "-"), file: "pub/small.bin", hash: small},
		{name: "curl active v6 upload", server: srv6, run: curlPut(srv6, upload, "incoming/curl6-port.bin", "-P", "-"), file: "incoming/curl6-port.bin", hash: upHash, upload: true},
		{name: "lftp passive v6 download", server: srv6, run: lftpGet(srv6, true, "pub/big.bin"), file: "pub/big.bin", hash: big},
		{name: "lftp active v6 download", server: srv6, run: lftpGet(srv6, false, "pub/small.bin"), file: "pub/small.bin", hash: small},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := b.ClientPath(fmt.Sprintf("%d.bin", i))
			if msg, err := tc.run(out); err != nil {
				t.Fatalf("transfer failed: %v\n%s", err, msg)
			}
			got := ""
			var err error
			if tc.upload {
				got, err = bed.HashFile(filepath.Join(b.FTPRoot, tc.file))
			} else {
				got, err = bed.HashFile(out)
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.hash {
				t.Fatalf("content differs: sha256 %s, want %s", got, tc.hash)
			}
			assertClean(t, b, static)
			t.Logf("ok: sha256 %s… matches, holes closed, ruleset back to static", got[:12])
		})
	}

	t.Run("listings", func(t *testing.T) {
		for _, flags := range [][]string{nil, {"-P", "-"}} {
			out, err := b.Curl(b.Client, append(flags, bed.URL(srv4, "pub/"))...)
			if err != nil || !strings.Contains(out, "big.bin") || !strings.Contains(out, "small.bin") {
				t.Fatalf("curl %v listing: %v\n%s", flags, err, out)
			}
		}
		for _, passive := range []bool{true, false} {
			out, err := b.Lftp(b.Client, srv4, passive, "cls -1 pub")
			if err != nil || !strings.Contains(out, "big.bin") {
				t.Fatalf("lftp passive=%v listing: %v\n%s", passive, err, out)
			}
		}
		assertClean(t, b, static)
	})

	t.Run("SIGTERM removes every rule", func(t *testing.T) {
		if err := proc.Signal(syscall.SIGTERM, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		if after := snapshot(t, b); after != baseline {
			t.Fatalf("rules left after SIGTERM:\n--- before ftpalg:\n%s\n--- after:\n%s", baseline, after)
		}
	})
}

func writeRandom(t *testing.T, path string, n int) string {
	t.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return bed.HashBytes(data)
}
