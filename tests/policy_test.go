package tests

// Issue 14, item 3: captured FTP never crosses the filter FORWARD chain (it
// is REDIRECTed in nat PREROUTING and the gateway dials the server itself),
// so the operator's FORWARD rules cannot forbid it. FTPALG_ALLOW_CLIENTS,
// FTPALG_ALLOW_SERVERS and FTPALG_DENY_SERVERS do, before the server is
// dialled.

import (
	"errors"
	"io"
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

const (
	msgPolicyClient = "421 Service not available: the gateway's policy does not allow this client.\r\n"
	msgPolicyServer = "421 Service not available: the gateway's policy does not allow this server.\r\n"
)

// mustRefuse421 connects from ns to dst through the capture and requires
// exactly the reply want, then the end of the connection.
func mustRefuse421(t *testing.T, b *bed.Bed, ns string, dst netip.AddrPort, want string) {
	t.Helper()
	c, err := b.Dial(ns, dst, 3*time.Second)
	if err != nil {
		t.Fatalf("%s -> %s: %v", ns, dst, err)
	}
	defer c.Close()
	f := newFTPConn(c)
	code, text, err := f.reply()
	if err != nil || text != want {
		t.Fatalf("%s -> %s: got %d %q %v, want %q", ns, dst, code, text, err, want)
	}
	f.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if rest, err := io.ReadAll(f.r); err != nil || len(rest) != 0 {
		t.Fatalf("%s -> %s: after the 421: %q %v, want the end of the connection", ns, dst, rest, err)
	}
	t.Logf("ok: %s -> %s: %q", ns, dst, strings.TrimSpace(text))
}

func TestPolicyForward(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	hash, err := b.WriteFile("pub/f.bin", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	// A server the policy denies: an FTP-like listener on the WAN host
	// "outsider", inside the allowed server range.
	denied4, denied6 := netip.AddrPortFrom(bed.Outsider4, 21), netip.AddrPortFrom(bed.Outsider6, 21)
	seen4 := countingListener(t, b, b.Outsider, denied4)
	seen6 := countingListener(t, b, b.Outsider, denied6)
	envFile := filepath.Join(b.Dir, "policy.env")
	policy := "FTPALG_ALLOW_CLIENTS=192.0.2.10,2001:db8:1::10\n" +
		"FTPALG_ALLOW_SERVERS=198.51.100.0/24,2001:db8:2::/64\n" +
		"FTPALG_DENY_SERVERS=198.51.100.66,2001:db8:2::66\n"
	if err := os.WriteFile(envFile, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startFtpalg(t, b, "FTPALG_LOG_FORMAT=json", "FTPALG_ENV_FILE="+envFile)
	static := snapshot(t, b)
	const (
		refClient = `ftpalg_sessions_refused_total{reason="policy_client"}`
		refServer = `ftpalg_sessions_refused_total{reason="policy_server"}`
		opened    = `ftpalg_holes_opened_total`
	)
	m := metricsOf(t, b, b.Gateway)
	for _, s := range []string{refClient, refServer} {
		if v, ok := m[s]; !ok || v != 0 {
			t.Fatalf("%s = %v (present %v), want 0 before any refusal", s, v, ok)
		}
	}
	openedBefore := m[opened]

	t.Run("denied client: 421 before any server is dialled", func(t *testing.T) {
		// Its other TCP is blocked by the gateway's FORWARD policy; FTP
		// would not be without the policy here.
		mustDrop(t, b, b.Attacker, netip.AddrPortFrom(bed.Server4, 22), "the denied client's other TCP")
		mustRefuse421(t, b, b.Attacker, netip.AddrPortFrom(bed.Server4, 21), msgPolicyClient)
		mustRefuse421(t, b, b.Attacker, netip.AddrPortFrom(bed.Server6, 21), msgPolicyClient)
		mustRefuse421(t, b, b.Attacker, denied4, msgPolicyClient)
		waitMetric(t, b, refClient, 3, 5*time.Second)
	})

	t.Run("denied server: 421, never dialled", func(t *testing.T) {
		for _, dst := range []netip.AddrPort{denied4, denied6} {
			mustListen(t, b, b.Outsider, dst)
			mustRefuse421(t, b, b.Client, dst, msgPolicyServer)
		}
		waitMetric(t, b, refServer, 2, 5*time.Second)
		if n4, n6 := seen4.Load(), seen6.Load(); n4 != 0 || n6 != 0 {
			t.Fatalf("the denied server saw %d+%d connections", n4, n6)
		}
	})

	t.Run("no hole was opened for the refused sessions", func(t *testing.T) {
		if v := metricsOf(t, b, b.Gateway)[opened]; v != openedBefore {
			t.Fatalf("%s = %v, was %v", opened, v, openedBefore)
		}
		assertClean(t, b, static)
		var logged int
		for _, l := range strings.Split(p.Out.String(), "\n") {
			if strings.Contains(l, `"msg":"session started"`) && (strings.Contains(l, bed.Attacker4.String()) || strings.Contains(l, bed.Outsider4.String())) {
				t.Fatalf("a refused session was relayed: %s", l)
			}
			if strings.Contains(l, `"msg":"session refused"`) && strings.Contains(l, `"reason":"policy: `) {
				logged++
			}
		}
		if logged != 5 {
			t.Fatalf("%d policy refusals logged, want 5:\n%s", logged, p.Out.String())
		}
	})

	t.Run("allowed client still transfers", func(t *testing.T) {
		for _, tc := range []struct {
			server netip.Addr
			flags  []string
		}{{bed.Server4, nil}, {bed.Server4, []string{"-P", "-"}}, {bed.Server6, nil}} {
			out := b.ClientPath("f.bin")
			if msg, err := b.Curl(b.Client, append(tc.flags, "-o", out, bed.URL(tc.server, "pub/f.bin"))...); err != nil {
				t.Fatalf("%v\n%s", err, msg)
			}
			if h, err := bed.HashFile(out); err != nil || h != hash {
				t.Fatalf("%s %v: content differs (%v)", tc.server, tc.flags, err)
			}
		}
		assertClean(t, b, static)
	})

	t.Run("SIGHUP applies a new policy", func(t *testing.T) {
		next := strings.Replace(policy, "FTPALG_ALLOW_CLIENTS=192.0.2.10,2001:db8:1::10", "FTPALG_ALLOW_CLIENTS=192.0.2.0/24", 1)
		if err := os.WriteFile(envFile, []byte(next), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := p.Send(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if err := b.WaitFor(5*time.Second, func() bool {
			return strings.Contains(p.Out.String(), `"msg":"reload: changed","var":"FTPALG_ALLOW_CLIENTS"`)
		}, "reload logged"); err != nil {
			t.Fatalf("%v\n%s", err, p.Out.String())
		}
		f := dialFTP(t, b, b.Attacker, bed.Server4) // logs in: 220, 331, 230
		f.cmd("QUIT")
		f.close()
		mustRefuse421(t, b, b.Attacker, denied4, msgPolicyServer)
		assertClean(t, b, static)
	})
}

// In reverse mode the server is the configured upstream: one the policy
// denies is a configuration error, and nothing is installed.
func TestPolicyReverseUpstreamDenied(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	bin, err := bed.Binary()
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, b)
	cmd := exec.Command("ip", "netns", "exec", b.Gateway, bin)
	cmd.Env = []string{"FTPALG_MODE=reverse", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=192.0.2.10:21",
		"FTPALG_DENY_SERVERS=192.0.2.0/24", "FTPALG_ALLOW_CLIENTS=198.51.100.0/24,bogus"}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("want exit status 2, got %v\n%s", err, out)
	}
	for _, want := range []string{
		"(2 problems)",
		`FTPALG_ALLOW_CLIENTS="198.51.100.0/24,bogus": expected a comma list of CIDRs or addresses`, `"bogus"`,
		`FTPALG_UPSTREAM="192.0.2.10:21": the server policy refuses 192.0.2.10:21 (FTPALG_ALLOW_SERVERS / FTPALG_DENY_SERVERS)`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("message lacks %q:\n%s", want, out)
		}
	}
	if after := snapshot(t, b); after != before {
		t.Fatalf("a refused configuration changed the ruleset:\n%s", after)
	}
	t.Logf("ok: refused with exit 2:\n%s", out)
}
