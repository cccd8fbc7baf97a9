// Per-client limits (issue 18): the session cap per client address, the
// login timeout and the block after failed logins, against the real
// vsftpd. Each test relies on the defaults where it can, so that it fails
// by behaviour on a build without the limits (which refuses unknown
// variables at start); the short timings come in by SIGHUP, which such a
// build refuses while it keeps serving.
package tests

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// The limits' refusals (proxy/limits.go).
const (
	msgClientLimit   = "421 Too many sessions from your address, try again later.\r\n"
	msgLoginBlocked  = "421 Too many failed logins from your address, try again later.\r\n"
	msgLoginTimeout  = "421 Timeout: not logged in in time, closing.\r\n"
	defaultPerClient = 32
)

// greeted opens a control connection from ns to the server through the
// capture and requires vsftpd's greeting: the session is relayed.
func greeted(t *testing.T, b *bed.Bed, ns string) *ftpConn {
	t.Helper()
	c, err := b.Dial(ns, netip.AddrPortFrom(bed.Server4, 21), 5*time.Second)
	if err != nil {
		t.Fatalf("control connection from %s: %v", ns, err)
	}
	f := newFTPConn(c)
	t.Cleanup(f.close)
	if code, text, err := f.reply(); err != nil || code != 220 || !strings.Contains(text, "vsFTPd") {
		t.Fatalf("from %s: %d %q %v, want vsftpd's greeting", ns, code, text, err)
	}
	return f
}

// greetedEventually opens control connections from ns until one is
// greeted 220 (a limit let it in), within timeout.
func greetedEventually(t *testing.T, b *bed.Bed, ns string, timeout time.Duration, what string) *ftpConn {
	t.Helper()
	var f *ftpConn
	eventually(t, b, timeout, what, func() bool {
		c, err := b.Dial(ns, netip.AddrPortFrom(bed.Server4, 21), 5*time.Second)
		if err != nil {
			return false
		}
		g := newFTPConn(c)
		if code, _, err := g.reply(); err != nil || code != 220 {
			g.close()
			return false
		}
		f = g
		return true
	})
	t.Cleanup(f.close)
	return f
}

// refusedWith opens a control connection from ns and requires exactly the
// line want, then the end of the connection.
func refusedWith(t *testing.T, b *bed.Bed, ns, want string) {
	t.Helper()
	mustRefuse421(t, b, ns, netip.AddrPortFrom(bed.Server4, 21), want)
}

// endsWith requires that f gets exactly the line want and is then closed.
func endsWith(t *testing.T, f *ftpConn, want string, d time.Duration) {
	t.Helper()
	got, closed := f.rest(d)
	if got != want || !closed {
		t.Fatalf("got %q (closed %v), want %q and the end of the connection", got, closed, want)
	}
}

// fetchFile downloads pub/<name> with curl from the client and checks its
// SHA-256.
func fetchFile(t *testing.T, b *bed.Bed, name, hash string) {
	t.Helper()
	out := b.ClientPath(name)
	os.Remove(out)
	if msg, err := b.Curl(b.Client, "-o", out, bed.URL(bed.Server4, "pub/"+name)); err != nil {
		t.Fatalf("curl: %v\n%s", err, msg)
	}
	if h, err := bed.HashFile(out); err != nil || h != hash {
		t.Fatalf("downloaded file differs (%v)", err)
	}
}

// reloadWith writes env to the daemon's FTPALG_ENV_FILE, sends SIGHUP and
// waits until the daemon has dealt with it (applied or refused).
func reloadWith(t *testing.T, b *bed.Bed, p *bed.Proc, envFile, env string) {
	t.Helper()
	if err := os.WriteFile(envFile, []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	n := strings.Count(p.Out.String(), `msg="reload`)
	if err := p.Send(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, b, 10*time.Second, "the reload logged", func() bool { return strings.Count(p.Out.String(), `msg="reload`) > n })
}

// An attacker holding more idle connections than the gateway has sessions
// does not lock the other clients out: past its own cap it gets 421, and
// another client still transfers. Without the cap (before issue 18) the
// attacker's connections took every session and the client got 421.
func TestLimitsLockout(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	hash := writeFile(t, b, "pub/lock.bin", 1<<20)
	const gateway = 40 // FTPALG_MAX_SESSIONS: more than the per-client cap
	startFtpalg(t, b, fmt.Sprintf("FTPALG_MAX_SESSIONS=%d", gateway))
	// The attacker connects as often as the gateway has sessions and holds
	// each connection open, never logging in.
	var first []string
	var conns []*ftpConn
	for range gateway {
		c, err := b.Dial(b.Attacker, netip.AddrPortFrom(bed.Server4, 21), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		f := newFTPConn(c)
		t.Cleanup(f.close)
		_, text, err := f.reply()
		if err != nil {
			t.Fatal(err)
		}
		first, conns = append(first, text), append(conns, f)
	}
	fetchFile(t, b, "lock.bin", hash)
	for i, text := range first {
		if i < defaultPerClient {
			if !strings.HasPrefix(text, "220 ") || !strings.Contains(text, "vsFTPd") {
				t.Fatalf("attacker's connection %d: %q, want vsftpd's greeting", i+1, text)
			}
			continue
		}
		if text != msgClientLimit {
			t.Fatalf("attacker's connection %d: %q, want %q", i+1, text, msgClientLimit)
		}
		if rest, closed := conns[i].rest(3 * time.Second); rest != "" || !closed {
			t.Fatalf("attacker's connection %d after the 421: %q (closed %v)", i+1, rest, closed)
		}
	}
	waitMetric(t, b, `ftpalg_sessions_refused_total{reason="client_limit"}`, gateway-defaultPerClient, 5*time.Second)
	waitMetric(t, b, activeSessions, defaultPerClient, 5*time.Second)
	t.Logf("ok: the attacker holds %d idle sessions and got 421 for %d more; the client's 1 MiB download is intact", defaultPerClient, gateway-defaultPerClient)
}

// The per-client cap holds at its default, leaves other clients alone,
// and a slot frees when one of the client's sessions ends.
func TestLimitsPerClientCap(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	hash := writeFile(t, b, "pub/cap.bin", 64<<10)
	startFtpalg(t, b)
	var held []*ftpConn
	for range defaultPerClient {
		held = append(held, greeted(t, b, b.Client))
	}
	refusedWith(t, b, b.Client, msgClientLimit)
	// Another address has its own count.
	other := greeted(t, b, b.Attacker)
	if err := other.loginRest(); err != nil {
		t.Fatalf("other client: %v", err)
	}
	// The cap is on sessions at once: when one ends, a new one is let in.
	expect(t, held[0], "QUIT", 221)
	held[0].close()
	f := greetedEventually(t, b, b.Client, 10*time.Second, "a session of the client let in again")
	if err := f.loginRest(); err != nil {
		t.Fatal(err)
	}
	if h := retrPassive(t, b, f, b.Client, "pub/cap.bin"); h != hash {
		t.Fatal("file differs")
	}
	refusedWith(t, b, b.Client, msgClientLimit)
	if v := metricsOf(t, b, b.Gateway)[`ftpalg_sessions_refused_total{reason="client_limit"}`]; v < 2 {
		t.Fatalf("client_limit refusals %v, want at least 2", v)
	}
	t.Logf("ok: %d sessions held, the next refused, another address served, a slot freed by QUIT taken by a transfer", defaultPerClient)
}

// loginRest logs in anonymously after the greeting was read.
func (f *ftpConn) loginRest() error {
	if code, text, err := f.cmd("USER anonymous"); err != nil || code != 331 {
		return fmt.Errorf("USER: %d %q %v", code, text, err)
	}
	if code, text, err := f.cmd("PASS test@example.com"); err != nil || code != 230 {
		return fmt.Errorf("PASS: %d %q %v", code, text, err)
	}
	return nil
}

// A session that has not logged in within FTPALG_LOGIN_TIMEOUT gets 421
// and is closed, talking or not; one that logged in in time is not cut.
func TestLimitsLoginTimeout(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	hash := writeFile(t, b, "pub/late.bin", 64<<10)
	envFile := filepath.Join(b.Dir, "limits.env")
	if err := os.WriteFile(envFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p := startFtpalg(t, b, "FTPALG_ENV_FILE="+envFile)
	const timeout = 2 * time.Second
	reloadWith(t, b, p, envFile, "FTPALG_LOGIN_TIMEOUT="+timeout.String()+"\n")

	in := greeted(t, b, b.Client)
	if err := in.loginRest(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	silent, talking := greeted(t, b, b.Client), greeted(t, b, b.Client)
	expect(t, talking, "FEAT", 211)
	expect(t, talking, "USER anonymous", 331)
	for name, f := range map[string]*ftpConn{"silent": silent, "talking": talking} {
		t.Run(name, func(t *testing.T) { endsWith(t, f, msgLoginTimeout, timeout+5*time.Second) })
	}
	if d := time.Since(start); d < timeout {
		t.Fatalf("cut after %s, before the %s timeout", d, timeout)
	}
	waitMetric(t, b, `ftpalg_sessions_refused_total{reason="login_timeout"}`, 2, 5*time.Second)
	// in's timer ran out before theirs: it is still served.
	if h := retrPassive(t, b, in, b.Client, "pub/late.bin"); h != hash {
		t.Fatal("file differs")
	}
	t.Logf("ok: sessions not logged in cut with 421 after %s; the logged-in one transferred after its timeout had passed", time.Since(start).Round(time.Millisecond))
}

// FTPALG_MAX_LOGIN_FAILURES 530s to PASS from one address (default 10,
// across its sessions) block its new sessions until FTPALG_LOGIN_BLOCK
// has passed; another address is served meanwhile.
func TestLimitsLoginBlock(t *testing.T) {
	requireRoot(t)
	// A banned anonymous password gets 530 to PASS, without PAM's delay
	// after a failure; no delay of vsftpd's own either (1 s by default).
	banned := filepath.Join(t.TempDir(), "banned")
	if err := os.WriteFile(banned, []byte("wrong@example.com\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := bed.NewWith(bed.Options{VsftpdExtra: []string{"deny_email_enable=YES", "banned_email_file=" + banned, "delay_failed_login=0"}}, t.Logf)
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
	hash := writeFile(t, b, "pub/ok.bin", 64<<10)
	envFile := filepath.Join(b.Dir, "limits.env")
	if err := os.WriteFile(envFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p := startFtpalg(t, b, "FTPALG_ENV_FILE="+envFile)
	const failures = 10 // the default
	wrong := func(f *ftpConn) {
		t.Helper()
		expect(t, f, "USER anonymous", 331)
		expect(t, f, "PASS wrong@example.com", 530)
	}
	// Two tries a session (vsftpd closes one after max_login_fails=3).
	for i := 0; i < failures-1; i += 2 {
		f := greeted(t, b, b.Attacker)
		wrong(f)
		if i+1 < failures-1 {
			wrong(f)
		}
		f.close()
	}
	last := greeted(t, b, b.Attacker)
	wrong(last) // the failure that blocks: 530, then the 421
	endsWith(t, last, msgLoginBlocked, 5*time.Second)
	blocked := time.Now()
	refusedWith(t, b, b.Attacker, msgLoginBlocked)
	// Another address is served meanwhile.
	fetchFile(t, b, "ok.bin", hash)
	waitMetric(t, b, `ftpalg_sessions_refused_total{reason="login_blocked"}`, 2, 5*time.Second)

	// The default block is 10 minutes; a shorter one applies at once.
	const block = 3 * time.Second
	reloadWith(t, b, p, envFile, "FTPALG_LOGIN_BLOCK="+block.String()+"\n")
	if time.Since(blocked) < block {
		refusedWith(t, b, b.Attacker, msgLoginBlocked)
	}
	f := greetedEventually(t, b, b.Attacker, block+10*time.Second, "the attacker's address let in again")
	if d := time.Since(blocked); d < block {
		t.Fatalf("let in again %s after the block started, before %s", d, block)
	}
	if err := f.loginRest(); err != nil {
		t.Fatal(err)
	}
	expect(t, f, "NOOP", 200)
	t.Logf("ok: %d wrong passwords blocked the address (421), another address was served, the block ended after %s", failures, block)
}
