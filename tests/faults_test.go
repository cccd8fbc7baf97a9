// Reliability suite, faults (issue 7): a daemon killed with SIGKILL (faults_kill9_test.go), an
// external firewall reload, a hole that cannot be installed, an upstream
// that never answers, clients that vanish, a long transfer under a short
// idle timeout. Bounce PORT/EPRT, a third host racing a hole, refused and
// unreachable upstreams and iptables -F are in security_test.go and
// ops_test.go; pool exhaustion in sidecar_test.go.
package tests

import (
	"fmt"
	"io"
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

// A firewall reload while sessions run, two ways: iptables-restore of the
// bed's own (pre-ftpalg) filter and nat tables, and `nft flush ruleset`
// followed by the bed's rules. What must hold: the static structure is back
// within 5 s (the ruleset equals the snapshot after start), running
// transfers (passive and active) finish byte-exact, an idle control session
// goes on and transfers, and new sessions transfer.
func TestFaultFirewallReload(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	big := writeFile(t, b, "pub/big.bin", 4<<20)
	small := writeFile(t, b, "pub/small.bin", 1<<10)
	// The operator's firewall as a reload would put it back.
	saved := map[string]string{}
	for _, fam := range []string{"iptables", "ip6tables"} {
		var all strings.Builder
		for _, table := range []string{"filter", "nat"} {
			out, err := b.Exec(b.Gateway, 10*time.Second, fam+"-save", "-t", table)
			if err != nil {
				t.Fatal(err)
			}
			all.WriteString(out)
		}
		file := filepath.Join(b.Dir, fam+".rules")
		if err := os.WriteFile(file, []byte(all.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		saved[fam] = file
	}
	restoreBed := func() {
		for _, fam := range []string{"iptables", "ip6tables"} {
			if out, err := b.Exec(b.Gateway, 10*time.Second, fam+"-restore", "-w", "5", saved[fam]); err != nil {
				t.Fatalf("%s-restore: %v\n%s", fam, err, out)
			}
		}
	}
	smallBuffers(t, b)
	startFtpalg(t, b)
	static := snapshot(t, b)

	for i, reload := range []struct {
		name string
		do   func()
		// A flush that removes the NAT tables makes the kernel drop the
		// conntrack entries of flows NATed by them (seen on 6.18: the
		// masqueraded passive and the DNATed active data flow vanish at
		// the `nft flush ruleset`, before ftpalg does anything; the
		// REDIRECTed control flows survive). Transfers in flight then fail
		// whatever a gateway does; control sessions must go on.
		dataSurvives bool
	}{
		{"iptables-restore of the pre-ftpalg filter and nat tables", restoreBed, true},
		{"nft flush ruleset, then the bed's own rules", func() {
			if out, err := b.Exec(b.Gateway, 10*time.Second, "nft", "flush", "ruleset"); err != nil {
				t.Fatalf("nft flush ruleset: %v\n%s", err, out)
			}
			restoreBed()
		}, false},
	} {
		t.Run(reload.name, func(t *testing.T) {
			before := scrape(t, b, b.Gateway, "ftpalg_static_rule_reinstalls_total")
			// Running: a passive and an active download (4 MiB at 1 MiB/s)
			// and an idle logged-in control session.
			outP, outA := b.ClientPath(fmt.Sprintf("r%d-pasv", i)), b.ClientPath(fmt.Sprintf("r%d-port", i))
			waitP := curlBackground(t, b, outP, "--limit-rate", "1M", bed.URL(bed.Server4, "pub/big.bin"))
			waitA := curlBackground(t, b, outA, "--limit-rate", "1M", "-P", "-", bed.URL(bed.Server4, "pub/big.bin"))
			idle := dialFTP(t, b, b.Client, bed.Server4)
			waitGrowing(t, b, outP)
			waitGrowing(t, b, outA)

			start := time.Now()
			reload.do()
			if snapshot(t, b) == static {
				t.Fatal("the reload left ftpalg's structure in place: nothing tested")
			}
			var last string
			if err := b.WaitFor(5*time.Second, func() bool { last = snapshot(t, b); return last == static }, "static structure back"); err != nil {
				t.Fatalf("%v\n--- static:\n%s\n--- now:\n%s", err, static, last)
			}
			took := time.Since(start)
			if v := scrape(t, b, b.Gateway, "ftpalg_static_rule_reinstalls_total"); v != before+1 {
				t.Fatalf("reinstalls %v, want %v", v, before+1)
			}
			if err := b.WaitFor(3*time.Second, b.Ready, "/readyz"); err != nil {
				t.Fatal(err)
			}
			t.Logf("ok: static structure back, exactly, %s after the reload; /readyz 200", took.Round(time.Millisecond))

			for _, r := range []struct {
				name string
				wait func() error
				out  string
			}{{"passive", waitP, outP}, {"active", waitA, outA}} {
				if !reload.dataSurvives {
					// The kernel itself drops the NATed flow at the flush;
					// such a download may hang until curl's --max-time, so
					// it is not awaited (cleanup kills it).
					t.Logf("note: %s download in flight across the NAT table flush is not required to survive; not awaited", r.name)
					continue
				}
				if err := r.wait(); err != nil {
					t.Fatalf("running %s download across the reload: %v", r.name, err)
				}
				h := hashFile(t, r.out)
				if h != big {
					t.Fatalf("running %s download across the reload: sha256 %s, want %s", r.name, h, big)
				}
			}
			if reload.dataSurvives {
				t.Logf("ok: the passive and the active download running across the reload arrived byte-exact")
			}
			expect(t, idle, "NOOP", 200)
			if h := retrPassive(t, b, idle, b.Client, "pub/small.bin"); h != small {
				t.Fatalf("transfer on the idle session after the reload: sha256 %s, want %s", h, small)
			}
			if h := retrActive(t, b, idle, "pub/small.bin"); h != small {
				t.Fatalf("active transfer on the idle session after the reload: sha256 %s, want %s", h, small)
			}
			idle.cmd("QUIT")
			idle.close()
			t.Logf("ok: the control session open across the reload goes on: NOOP, passive and active RETR byte-exact")
			for _, flags := range [][]string{nil, {"-P", "-"}} {
				o := b.ClientPath(fmt.Sprintf("r%d-new", i))
				if msg, err := b.Curl(b.Client, append(flags, "-o", o, bed.URL(bed.Server4, "pub/small.bin"))...); err != nil {
					t.Fatalf("new transfer %v after the reload: %v\n%s", flags, err, msg)
				}
				if h := hashFile(t, o); h != small {
					t.Fatalf("new transfer %v: sha256 %s, want %s", flags, h, small)
				}
			}
			t.Logf("ok: new sessions after the reload transfer (passive, active), byte-exact")
			assertClean(t, b, static)
		})
	}
}

// A hole install that fails: the filter ipset FTPALG-FWD4 is filled to its
// maxelem from outside (2 * (5 pool ports + 5 sessions) = 20) with harmless
// permanent entries. What must hold: PASV gets exactly the 425 "could not
// install the rule" and never the 227; PORT gets the same 425 and is never
// sent to the server (the replies that follow stay in step); the session
// goes on; ftpalg_hole_install_failures_total counts each; once the junk is
// gone, PASV and PORT work again on the same session.
func TestFaultHoleInstallFailure(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	small := writeFile(t, b, "pub/small.bin", 1<<10)
	startFtpalg(t, b, "FTPALG_DATA_PORTS=50000-50004", "FTPALG_MAX_SESSIONS=5")
	static := snapshot(t, b)
	hdr, err := b.Exec(b.Gateway, 5*time.Second, "ipset", "list", "-t", "FTPALG-FWD4")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`maxelem (\d+)`).FindStringSubmatch(hdr)
	if m == nil || m[1] != "20" {
		t.Fatalf("FTPALG-FWD4 maxelem: want 20 (2*(5 ports + 5 sessions)), header:\n%s", hdr)
	}
	junk := func(op string) {
		var sb strings.Builder
		for i := 1; i <= 20; i++ {
			fmt.Fprintf(&sb, "%s FTPALG-FWD4 203.0.113.%d,tcp:%d,203.0.113.%d", op, i, 40000+i, i)
			if op == "add" {
				sb.WriteString(" timeout 0") // permanent: the kernel cannot expire its way out
			}
			sb.WriteString("\n")
		}
		file := filepath.Join(b.Dir, "junk-"+op)
		if err := os.WriteFile(file, []byte(sb.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := b.Exec(b.Gateway, 5*time.Second, "ipset", "restore", "-file", file); err != nil {
			t.Fatalf("ipset %s junk: %v\n%s", op, err, out)
		}
	}
	junk("add")
	if n := len(fwdMembers(t, b)); n != 20 {
		t.Fatalf("FTPALG-FWD4 has %d members, want 20", n)
	}
	failures := scrape(t, b, b.Gateway, "ftpalg_hole_install_failures_total")

	f := dialFTP(t, b, b.Client, bed.Server4)
	var seen strings.Builder
	code, text, err := f.cmd("PASV")
	seen.WriteString(text)
	if err != nil || text != msgOpenFailed {
		t.Fatalf("PASV with a full set: got %d %q %v, want %q", code, text, err, msgOpenFailed)
	}
	t.Logf("ok: PASV with the set full -> %q", strings.TrimSpace(text))
	code, text, err = f.cmd("NOOP")
	seen.WriteString(text)
	if err != nil || text != "200 NOOP ok.\r\n" {
		t.Fatalf("NOOP after the failed PASV: %d %q %v", code, text, err)
	}
	if v := scrape(t, b, b.Gateway, "ftpalg_hole_install_failures_total"); v != failures+1 {
		t.Fatalf("hole_install_failures_total %v, want %v", v, failures+1)
	}
	t.Logf("ok: session goes on (NOOP -> 200 NOOP ok.), install failures %v -> %v", failures, failures+1)

	ln, _, portCmd := clientListener(t, b)
	defer ln.Close()
	code, text, err = f.cmd(portCmd)
	seen.WriteString(text)
	if err != nil || text != msgOpenFailed {
		t.Fatalf("PORT with a full set: got %d %q %v, want %q", code, text, err, msgOpenFailed)
	}
	// Had the server seen the PORT, its "200 PORT command successful" would
	// be the next reply; the replies must be NOOP's, then PWD's, and nothing
	// else may be waiting.
	code, text, err = f.cmd("NOOP")
	seen.WriteString(text)
	if err != nil || text != "200 NOOP ok.\r\n" {
		t.Fatalf("NOOP after the failed PORT: %d %q %v (the server saw the PORT?)", code, text, err)
	}
	code, text, err = f.cmd("PWD")
	seen.WriteString(text)
	if err != nil || code != 257 {
		t.Fatalf("PWD after the failed PORT: %d %q %v", code, text, err)
	}
	// Had the server seen the PORT, its reply would be waiting ahead of
	// this NOOP's: the replies stay in step only if it did not.
	code, text, err = f.cmd("NOOP")
	seen.WriteString(text)
	if err != nil || text != "200 NOOP ok.\r\n" || f.r.Buffered() != 0 {
		t.Fatalf("second NOOP after the failed PORT: %d %q %v, %d bytes more waiting (the server saw the PORT?)", code, text, err, f.r.Buffered())
	}
	if v := scrape(t, b, b.Gateway, "ftpalg_hole_install_failures_total"); v != failures+2 {
		t.Fatalf("hole_install_failures_total %v, want %v", v, failures+2)
	}
	if strings.Contains(seen.String(), "227") || strings.Contains(seen.String(), "PORT command successful") {
		t.Fatalf("a withheld endpoint reached the client:\n%s", seen.String())
	}
	for _, mem := range fwdMembers(t, b) {
		if !strings.HasPrefix(mem, "203.0.113.") {
			t.Fatalf("a hole member %q exists although the install failed", mem)
		}
	}
	if n := liveHoles(t, b); n != 20 {
		t.Fatalf("live members %d, want the 20 junk entries only", n)
	}
	t.Logf("ok: PORT with the set full -> 425, never sent to the server (NOOP, PWD replies in step), no 227 and no rewritten PORT reached the client, failures now %v", failures+2)

	junk("del")
	if h := retrPassive(t, b, f, b.Client, "pub/small.bin"); h != small {
		t.Fatalf("passive RETR after the set emptied: sha256 %s, want %s", h, small)
	}
	if h := retrActive(t, b, f, "pub/small.bin"); h != small {
		t.Fatalf("active RETR after the set emptied: sha256 %s, want %s", h, small)
	}
	t.Logf("ok: with the junk removed the same session's PASV and PORT work again, byte-exact")
	f.cmd("QUIT")
	f.close()
	assertClean(t, b, static)
}

// smallBuffers shrinks the client's receive and the server's send buffers,
// so that curl --limit-rate paces the data connection itself: otherwise the
// kernel swallows megabytes in milliseconds, vsftpd sends its 226 at once and
// the "long" transfer is over on the wire before it has begun for curl.
func smallBuffers(t *testing.T, b *bed.Bed) {
	t.Helper()
	for ns, c := range map[string]string{
		b.Client: "net.ipv4.tcp_rmem=4096 32768 65536",
		b.Server: "net.ipv4.tcp_wmem=4096 16384 32768",
	} {
		if _, err := b.Exec(ns, 5*time.Second, "sysctl", "-qw", c); err != nil {
			t.Fatal(err)
		}
	}
}

// Sessions that end badly, with FTPALG_IDLE_TIMEOUT=2s and
// FTPALG_CONNECT_TIMEOUT=2s (the pinhole TTL stays at its 30 s default so
// that a hole going away is the session's cleanup, not the kernel's).
func TestFaultSessions(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	b.WriteFile("pub/big.bin", 8<<20)
	slow := writeFile(t, b, "pub/slow.bin", 3<<20)
	// 198.51.100.22 exists on the server but drops every SYN to port 21.
	for _, c := range []string{"ip addr add 198.51.100.22/24 dev eth0", "iptables -w -A INPUT -d 198.51.100.22 -p tcp --dport 21 -j DROP"} {
		if _, err := b.Exec(b.Server, 10*time.Second, strings.Fields(c)...); err != nil {
			t.Fatal(err)
		}
	}
	const idle, connect = 2 * time.Second, 2 * time.Second
	startFtpalg(t, b, "FTPALG_IDLE_TIMEOUT=2s", "FTPALG_CONNECT_TIMEOUT=2s")
	static := snapshot(t, b)
	rest := restingState(t, b)

	t.Run("silent upstream: 421 within the connect timeout, nothing leaked", func(t *testing.T) {
		silent := netip.MustParseAddrPort("198.51.100.22:21")
		refused := scrape(t, b, b.Gateway, `ftpalg_sessions_refused_total{reason="upstream_unreachable"}`)
		const n = 4
		type res struct {
			text string
			took time.Duration
			eof  bool
			err  error
		}
		results := make(chan res, n)
		for range n {
			go func() {
				start := time.Now()
				c, err := b.Dial(b.Client, silent, 3*time.Second)
				if err != nil {
					results <- res{err: err}
					return
				}
				f := newFTPConn(c)
				defer f.close()
				_, text, err := f.reply()
				took := time.Since(start)
				_, eof := f.rest(2 * time.Second)
				results <- res{text, took, eof, err}
			}()
		}
		for range n {
			r := <-results
			if r.err != nil || r.text != msgUnreachable || !r.eof {
				t.Fatalf("silent upstream: got %q eof=%v %v, want %q then close", r.text, r.eof, r.err, msgUnreachable)
			}
			if r.took < connect-100*time.Millisecond || r.took > connect+700*time.Millisecond {
				t.Fatalf("421 after %s, want the connect timeout %s (+0.7 s slack)", r.took, connect)
			}
			t.Logf("ok: silent upstream: %q after %s, then closed", strings.TrimSpace(r.text), r.took.Round(time.Millisecond))
		}
		if v := scrape(t, b, b.Gateway, `ftpalg_sessions_refused_total{reason="upstream_unreachable"}`); v != refused+n {
			t.Fatalf("refused{upstream_unreachable} %v, want %v", v, refused+n)
		}
		waitResting(t, b, rest, 5*time.Second)
		assertClean(t, b, static)
		t.Logf("ok: %d sessions refused as upstream_unreachable; no session active, goroutines %v and open fds %v as before, ruleset static", n, rest.goroutines, rest.fds)
	})

	t.Run("client RST mid-transfer: session ends, holes and the data flow's conntrack entry removed", func(t *testing.T) {
		f := dialFTP(t, b, b.Client, bed.Server4)
		expect(t, f, "TYPE I", 200)
		ep, err := f.pasv()
		if err != nil {
			t.Fatal(err)
		}
		dc, err := b.Dial(b.Client, ep, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer dc.Close() // open to the end: only the control connection goes
		expect(t, f, "RETR pub/big.bin", 150)
		buf := make([]byte, 64<<10)
		dc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(dc, buf); err != nil {
			t.Fatal(err)
		}
		flow := []string{"conntrack", "-L", "-p", "tcp", "--orig-src", bed.Client4.String(), "--orig-dst", ep.Addr().String(), "--dport", strconv.Itoa(int(ep.Port()))}
		// One line per entry (both of its tuples name the port).
		countFlows := func() int {
			out, err := b.Exec(b.Gateway, 5*time.Second, flow...)
			if err != nil {
				t.Fatalf("conntrack -L: %v %s", err, out)
			}
			n := 0
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "tcp ") {
					n++
				}
			}
			return n
		}
		if n := countFlows(); n != 1 {
			t.Fatalf("want the data connection tracked once in the gateway, have %d", n)
		}
		if v := scrape(t, b, b.Gateway, activeSessions); v != 1 {
			t.Fatalf("sessions active %v, want 1", v)
		}
		tc := f.c.(*net.TCPConn)
		tc.SetLinger(0)
		tc.Close()
		gone := time.Now()
		waitMetric(t, b, activeSessions, 0, 3*time.Second)
		t.Logf("ok: session ended %s after the client's RST", time.Since(gone).Round(time.Millisecond))
		if n := countFlows(); n != 0 {
			t.Fatalf("the data connection is still tracked (%d entries) after the session ended", n)
		}
		assertClean(t, b, static)
		t.Logf("ok: data flow %s -> %s no longer in the gateway's conntrack although the client's data socket is open; holes gone, ruleset static", bed.Client4, ep)
	})

	t.Run("client silent past the idle timeout after PASV: 421 and the hole removed", func(t *testing.T) {
		f := dialFTP(t, b, b.Client, bed.Server4)
		ep, err := f.pasv()
		if err != nil {
			t.Fatal(err)
		}
		asked := time.Now()
		onlyHolesTo(t, b, bed.Server4, 1)
		got, eof := f.rest(idle + 3*time.Second)
		took := time.Since(asked)
		if got != msgIdle || !eof {
			t.Fatalf("after %s of silence: got %q eof=%v, want %q then close", took, got, eof, msgIdle)
		}
		if took < idle-100*time.Millisecond || took > idle+1500*time.Millisecond {
			t.Fatalf("idle 421 after %s, want about %s", took, idle)
		}
		if n := liveHoles(t, b); n != 0 {
			t.Fatalf("%d holes live after the idle close", n)
		}
		mustDropListening(t, b, b.Client, ep, b.Server, ep, "client on the hole of its idled-out session")
		assertClean(t, b, static)
		t.Logf("ok: %q %s after the 227; hole removed (TTL is 30 s)", strings.TrimSpace(got), took.Round(time.Millisecond))
	})

	t.Run("long transfers, idle control channel: kept while data flows", func(t *testing.T) {
		// 3 MiB at 512 KiB/s: about 6 s, three idle timeouts.
		smallBuffers(t, b)
		type run struct {
			name string
			out  string
			wait func() error
		}
		var took time.Duration
		// curl's --limit-rate let a download through at full speed once in
		// about six runs here; such a run tests nothing, so it is repeated.
		for attempt := 1; attempt <= 3 && took < 5*time.Second; attempt++ {
			var runs []run
			start := time.Now()
			for _, m := range []struct {
				name  string
				flags []string
			}{{"passive", nil}, {"active", []string{"-P", "-"}}} {
				o := b.ClientPath(fmt.Sprintf("slow-%s-%d", m.name, attempt))
				runs = append(runs, run{m.name, o, curlBackground(t, b, o, append(m.flags, "--limit-rate", "512K", bed.URL(bed.Server4, "pub/slow.bin"))...)})
			}
			for _, r := range runs {
				if err := r.wait(); err != nil {
					t.Fatalf("%s: %v", r.name, err)
				}
				if h := hashFile(t, r.out); h != slow {
					t.Fatalf("%s: sha256 %s, want %s", r.name, h, slow)
				}
			}
			took = time.Since(start)
			if took < 5*time.Second {
				t.Logf("attempt %d: transfers took %s, not rate-limited by curl; again", attempt, took)
			}
		}
		if took < 5*time.Second {
			t.Fatalf("transfers took %s, want over 5 s (2.5 idle timeouts): nothing tested", took)
		}
		assertClean(t, b, static)
		t.Logf("ok: passive and active 3 MiB downloads over %s with the control channel silent (idle timeout %s) arrived byte-exact", took.Round(time.Millisecond), idle)
	})
}
