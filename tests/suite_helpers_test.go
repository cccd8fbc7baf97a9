package tests

// Helpers shared by the reliability suite (faults_test.go, hostile_test.go,
// load_test.go): metrics, raw control-channel I/O, a scriptable hostile FTP
// server, and the exact "dropped, not answered" refusal.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// Replies the gateway itself writes (alg/messages.go, proxy/session.go).
const (
	msgClosing     = "421 Service not available, closing control connection.\r\n"
	msgIdle        = "421 Timeout: control connection idle, closing.\r\n"
	msgUnreachable = "421 Service not available: cannot reach the FTP server.\r\n"
	msgBadPassive  = "425 Can't open data connection: unacceptable passive reply from server.\r\n"
	msgOpenFailed  = "425 Can't open data connection: gateway could not install the rule.\r\n"
	msgBadEOL      = "500 Syntax error: lines must end in CRLF.\r\n"
	msgBadTelnet   = "500 Syntax error: Telnet command not allowed here.\r\n"
)

const activeSessions = `ftpalg_sessions_active{mode="forward"}`

// metricsOf scrapes /metrics in ns once and returns every sample.
func metricsOf(t *testing.T, b *bed.Bed, ns string) map[string]float64 {
	t.Helper()
	m, err := tryMetrics(b, ns)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	return m
}

// tryMetrics scrapes /metrics; under heavy load a scrape may time out.
func tryMetrics(b *bed.Bed, ns string) (map[string]float64, error) {
	out, err := b.Exec(ns, 10*time.Second, "curl", "-sf", fmt.Sprintf("http://127.0.0.1:%d/metrics", bed.AdminPort))
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, l := range strings.Split(out, "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err == nil {
			m[l[:i]] = v
		}
	}
	return m, nil
}

// waitMetric polls until sample == want, or fails after d.
func waitMetric(t *testing.T, b *bed.Bed, sample string, want float64, d time.Duration) {
	t.Helper()
	var last float64
	if err := b.WaitFor(d, func() bool {
		m, err := tryMetrics(b, b.Gateway) // a scrape may time out on a saturated machine
		if err != nil {
			return false
		}
		last = m[sample]
		return last == want
	}, sample); err != nil {
		t.Fatalf("%s = %v, want %v: %v", sample, last, want, err)
	}
}

// baseline is the daemon's resource use at rest.
type baseline struct{ goroutines, fds, rss float64 }

// restingState is the least of five samples 100 ms apart, field by field:
// the daemon's own periodic work (the canary's iptables-save and netlink
// reads, the janitor) holds a goroutine or a descriptor for a moment, and
// a baseline taken in that moment can never be met again (seen once:
// goroutines 17 at rest against a baseline of 18).
func restingState(t *testing.T, b *bed.Bed) baseline {
	t.Helper()
	var low baseline
	for i := range 5 {
		if i > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		m := metricsOf(t, b, b.Gateway)
		cur := baseline{m["go_goroutines"], m["process_open_fds"], m["process_resident_memory_bytes"]}
		if i == 0 {
			low = cur
			continue
		}
		low = baseline{min(low.goroutines, cur.goroutines), min(low.fds, cur.fds), min(low.rss, cur.rss)}
	}
	return low
}

// waitResting waits until no session is active and go_goroutines and
// process_open_fds equal the values of before (exactly), and returns the
// final state.
func waitResting(t *testing.T, b *bed.Bed, before baseline, d time.Duration) baseline {
	t.Helper()
	var now baseline
	var active float64
	err := b.WaitFor(d, func() bool {
		m, err := tryMetrics(b, b.Gateway)
		if err != nil {
			return false
		}
		now = baseline{m["go_goroutines"], m["process_open_fds"], m["process_resident_memory_bytes"]}
		active = m[activeSessions]
		return active == 0 && now.goroutines == before.goroutines && now.fds == before.fds
	}, "goroutines and fds back to their starting values")
	if err != nil {
		t.Fatalf("%v: sessions active %v, goroutines %v (before %v), open fds %v (before %v)",
			err, active, now.goroutines, before.goroutines, now.fds, before.fds)
	}
	return now
}

// mustDrop asserts that the gateway drops a SYN from ns to dst: the dial
// times out. A refusal by the far end (RST) would mean the SYN got through.
func mustDrop(t *testing.T, b *bed.Bed, ns string, dst netip.AddrPort, why string) {
	t.Helper()
	c, err := b.Dial(ns, dst, 1500*time.Millisecond)
	if err == nil {
		c.Close()
		t.Fatalf("%s: connection from %s to %s got through", why, ns, dst)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%s: %s -> %s was answered (%v): the SYN crossed the gateway", why, ns, dst, err)
	}
	t.Logf("ok: %s: SYN %s -> %s dropped by the gateway (%v)", why, ns, dst, err)
}

// send writes raw bytes on the control connection.
func (f *ftpConn) send(s string) error {
	f.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := f.c.Write([]byte(s))
	return err
}

// rest reads everything until the gateway closes the connection (or d
// passes) and says whether it closed: a FIN, or a RST when the gateway
// closed with input of ours still unread (a 10 KiB line).
func (f *ftpConn) rest(d time.Duration) (string, bool) {
	f.c.SetReadDeadline(time.Now().Add(d))
	data, err := io.ReadAll(f.r)
	return string(data), err == nil || errors.Is(err, syscall.ECONNRESET)
}

// expect sends cmd and requires the reply code.
func expect(t *testing.T, f *ftpConn, cmd string, code int) string {
	t.Helper()
	c, text, err := f.cmd(cmd)
	if err != nil || c != code {
		t.Fatalf("%s: got %d %q %v, want %d", cmd, c, text, err, code)
	}
	return text
}

// retrPassive fetches path over PASV on a logged-in session, from ns, and
// returns the SHA-256 of what arrived.
func retrPassive(t *testing.T, b *bed.Bed, f *ftpConn, ns, path string) string {
	t.Helper()
	expect(t, f, "TYPE I", 200)
	ep, err := f.pasv()
	if err != nil {
		t.Fatal(err)
	}
	dc, err := b.Dial(ns, ep, 3*time.Second)
	if err != nil {
		t.Fatalf("data connection to %s: %v", ep, err)
	}
	defer dc.Close()
	expect(t, f, "RETR "+path, 150)
	return readTransfer(t, f, dc, path)
}

// retrActive fetches path over PORT on a logged-in session from the client
// namespace and returns the SHA-256 of what arrived.
func retrActive(t *testing.T, b *bed.Bed, f *ftpConn, path string) string {
	t.Helper()
	expect(t, f, "TYPE I", 200)
	ln, _, portCmd := clientListener(t, b)
	defer ln.Close()
	expect(t, f, portCmd, 200)
	expect(t, f, "RETR "+path, 150)
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	dc, err := ln.Accept()
	if err != nil {
		t.Fatalf("active data connection never arrived: %v", err)
	}
	defer dc.Close()
	return readTransfer(t, f, dc, path)
}

// readTransfer reads a data connection to its end, checks the 226 that
// follows on the control connection, and returns the data's SHA-256.
func readTransfer(t *testing.T, f *ftpConn, dc net.Conn, path string) string {
	t.Helper()
	dc.SetReadDeadline(time.Now().Add(30 * time.Second))
	data, err := io.ReadAll(dc)
	if err != nil {
		t.Fatalf("RETR %s: %v", path, err)
	}
	if c, text, err := f.reply(); err != nil || c != 226 {
		t.Fatalf("after RETR: %d %q %v", c, text, err)
	}
	return bed.HashBytes(data)
}

// clientListener listens on an ephemeral port of the client's address in
// its namespace, for an active data connection, and returns the port and
// the PORT command that names it. The caller closes it.
func clientListener(t *testing.T, b *bed.Bed) (ln net.Listener, port uint16, portCmd string) {
	t.Helper()
	ln, err := b.Listen(b.Client, netip.AddrPortFrom(bed.Client4, 0))
	if err != nil {
		t.Fatal(err)
	}
	port = netip.MustParseAddrPort(ln.Addr().String()).Port()
	return ln, port, fmt.Sprintf("PORT 192,0,2,10,%d,%d", port>>8, port&0xff)
}

// curlBackground starts a curl download in the client namespace; wait on
// the returned function for its result.
func curlBackground(t *testing.T, b *bed.Bed, out string, flags ...string) func() error {
	t.Helper()
	args := append([]string{"curl", "-sS", "--fail", "-g", "--connect-timeout", "10", "--max-time", "60", "-o", out}, flags...)
	p, err := b.Start(b.Client, "curl", nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return func() error {
		if err := p.Wait(70 * time.Second); err != nil {
			return fmt.Errorf("%v: %s", err, p.Out.String())
		}
		return nil
	}
}

// waitGrowing waits until a download has started writing.
func waitGrowing(t *testing.T, b *bed.Bed, path string) {
	t.Helper()
	if err := b.WaitFor(10*time.Second, func() bool {
		st, err := os.Stat(path)
		return err == nil && st.Size() > 0
	}, "download "+path+" under way"); err != nil {
		t.Fatal(err)
	}
}

// fwdMembers lists the members of the filter ipset FTPALG-FWD4.
func fwdMembers(t *testing.T, b *bed.Bed) []string {
	t.Helper()
	sets, err := b.Sets()
	if err != nil {
		t.Fatal(err)
	}
	return sets["FTPALG-FWD4"]
}

// onlyHolesTo asserts that exactly n holes are live, every one of them a
// filter entry from the client to dst (and no NAT element anywhere).
func onlyHolesTo(t *testing.T, b *bed.Bed, dst netip.Addr, n int) []string {
	t.Helper()
	members := fwdMembers(t, b)
	live, err := b.LiveHoles()
	if err != nil {
		t.Fatal(err)
	}
	if live != n || len(members) != n {
		t.Fatalf("want %d holes, have %d live (FTPALG-FWD4: %v)", n, live, members)
	}
	want := regexp.MustCompile(`^` + regexp.QuoteMeta(bed.Client4.String()) + `,tcp:\d+,` + regexp.QuoteMeta(dst.String()) + `$`)
	for _, m := range members {
		if !want.MatchString(m) {
			t.Fatalf("hole %q is not client -> %s", m, dst)
		}
	}
	return members
}

// fakeFTP is a scriptable hostile FTP server: it greets, accepts any login
// (331, 230) and then hands the connection to the current script.
type fakeFTP struct {
	ln     net.Listener
	mu     sync.Mutex
	script func(c net.Conn, r *bufio.Reader)
	wg     sync.WaitGroup
}

func startFake(t *testing.T, b *bed.Bed, at netip.AddrPort) *fakeFTP {
	t.Helper()
	ln, err := b.Listen(b.Outsider, at)
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeFTP{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			script := s.script
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				if !fakeLogin(c, r) || script == nil {
					return
				}
				script(c, r)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *fakeFTP) set(script func(c net.Conn, r *bufio.Reader)) {
	s.mu.Lock()
	s.script = script
	s.mu.Unlock()
}

func fakeLogin(c net.Conn, r *bufio.Reader) bool {
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write([]byte("220 hostile test server\r\n")); err != nil {
		return false
	}
	for _, ans := range []string{"331 Any password.\r\n", "230 Logged in.\r\n"} {
		if _, err := r.ReadString('\n'); err != nil {
			return false
		}
		if _, err := c.Write([]byte(ans)); err != nil {
			return false
		}
	}
	return true
}

// fakeLine reads one command line in a fake script.
func fakeLine(c net.Conn, r *bufio.Reader) (string, error) {
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	l, err := r.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

// tuple renders ap as the h1,h2,h3,h4,p1,p2 of a 227.
func tuple(ap netip.AddrPort) string {
	a := ap.Addr().As4()
	return fmt.Sprintf("%d,%d,%d,%d,%d,%d", a[0], a[1], a[2], a[3], ap.Port()>>8, ap.Port()&0xff)
}
