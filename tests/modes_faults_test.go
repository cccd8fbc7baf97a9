package tests

import (
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// kill -9 in reverse and sidecar modes, with an unused passive hole pending
// (a DNAT+SNAT hole to the server). What must hold, as in forward mode:
// after the TTL the rightful client cannot use the hole; the ruleset left
// behind is exactly the static structure; a restart installs exactly the
// same; a new transfer works.
func TestModesKill9(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name string
		// setup returns the bed, the running daemon, the namespace holding
		// the rules, its static ruleset, and how to start a new daemon.
		setup func(t *testing.T) (*bed.Bed, *bed.Proc, string, string, func() (*bed.Proc, error))
	}{
		{"reverse", func(t *testing.T) (*bed.Bed, *bed.Proc, string, string, func() (*bed.Proc, error)) {
			b, err := bed.NewWith(bed.Options{VsftpdNS: "client"}, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(b.Close)
			env := []string{"FTPALG_MODE=reverse", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=192.0.2.10:21", "FTPALG_PINHOLE_TTL=3s"}
			p := startFtpalg(t, b, env...)
			return b, p, b.Gateway, snapshot(t, b), func() (*bed.Proc, error) { return b.StartFtpalg(env...) }
		}},
		{"sidecar", func(t *testing.T) (*bed.Bed, *bed.Proc, string, string, func() (*bed.Proc, error)) {
			b, p, static := sidecarBed(t)
			env := []string{"FTPALG_MODE=sidecar", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=127.0.0.1:" + podPort,
				"FTPALG_PUBLIC_ADDR=198.51.100.1", "FTPALG_DATA_PORTS=" + sidecarPool, "FTPALG_PINHOLE_TTL=3s"}
			return b, p, b.Client, static, func() (*bed.Proc, error) { return b.StartFtpalgIn(b.Client, env...) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, p, rulesNS, static, restart := tc.setup(t)
			hash := writeFile(t, b, "pub/after.bin", 64<<10)
			outside := b.Server
			f := dialFTP(t, b, outside, bed.GwWAN4)
			ep, err := f.pasv()
			if err != nil {
				t.Fatal(err)
			}
			if n := liveHolesIn(t, b, rulesNS); n == 0 {
				t.Fatal("no hole pending before the kill")
			}
			// The inside server (vsftpd in the client namespace) is behind
			// the hole; its passive listener dies with the session.
			fin := natFinal(t, b, rulesNS, bed.Server4, ep)
			if err := p.Signal(syscall.SIGKILL, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			f.close()
			t.Logf("ok: ftpalg killed with SIGKILL, passive hole %s pending", ep)
			waitHoles(t, b, rulesNS, 0, 3*time.Second+3*time.Second)
			mustDropListening(t, b, outside, ep, b.Client, fin, "rightful client on its expired hole after kill -9")
			if left := rulesetOf(t, b, rulesNS); left != static {
				t.Fatalf("after kill -9 and the TTL the ruleset is not the static structure:\n--- static:\n%s\n--- left:\n%s", static, left)
			}
			if _, err := restart(); err != nil {
				t.Fatal(err)
			}
			if again := rulesetOf(t, b, rulesNS); again != static {
				t.Fatalf("restart did not install exactly the static structure:\n--- want:\n%s\n--- got:\n%s", static, again)
			}
			t.Logf("ok: restart left exactly the static structure")
			out := b.ClientPath("after.bin")
			if msg, err := b.Curl(outside, "-o", out, bed.URL(bed.GwWAN4, "pub/after.bin")); err != nil {
				t.Fatalf("transfer after the restart: %v\n%s", err, msg)
			}
			if got := hashFile(t, out); got != hash {
				t.Fatal("content differs after the restart")
			}
			t.Logf("ok: new transfer after the restart, byte-exact")
			assertCleanIn(t, b, rulesNS, static)
		})
	}
}
