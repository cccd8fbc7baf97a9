package tests

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// TestDrainStuckClients: on SIGTERM, with clients that stopped reading their
// control connection while the gateway has replies to write to them, the
// daemon still exits within the grace plus a small bound and removes every
// rule (issue 14, item 10). A client that does read gets the 421.
func TestDrainStuckClients(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	// Small buffers fill with a few hundred replies.
	for ns, c := range map[string]string{
		b.Client:  "net.ipv4.tcp_rmem=4096 16384 32768",
		b.Gateway: "net.ipv4.tcp_wmem=4096 16384 65536",
	} {
		if _, err := b.Exec(ns, 5*time.Second, "sysctl", "-qw", c); err != nil {
			t.Fatal(err)
		}
	}
	const grace, bound, stuck = 2 * time.Second, 5 * time.Second, 4
	// STAT of a directory is its listing on the control connection: with
	// 600 names, about 40 KB a reply (under FTPALG_MAX_REPLY).
	if err := os.Mkdir(filepath.Join(b.FTPRoot, "many"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 600 {
		if _, err := b.WriteFile(fmt.Sprintf("many/file-%04d.bin", i), 1); err != nil {
			t.Fatal(err)
		}
	}
	baseline := snapshot(t, b)
	proc := startFtpalg(t, b, "FTPALG_CAPTURE_IFACES=lan0", "FTPALG_SHUTDOWN_GRACE="+grace.String())

	reader := dialFTP(t, b, b.Client, bed.Server4)
	var locals []netip.AddrPort
	for i := range stuck {
		f := dialFTP(t, b, b.Client, bed.Server4)
		locals = append(locals, netip.MustParseAddrPort(f.c.LocalAddr().String()))
		// 20 pipelined STATs (under the 32 commands the gateway lets
		// await a reply), whose 800 KB of replies are never read.
		if err := f.send(strings.Repeat("STAT many\r\n", 20)); err != nil {
			t.Fatalf("stuck client %d: %v", i, err)
		}
	}
	// Stuck: for each stuck client, the gateway holds unsent bytes for it
	// and leaves the server's replies unread, on several polls in a row.
	inARow := 0
	var last string
	err := b.WaitFor(20*time.Second, func() bool {
		ok, state := gatewayStuck(t, b, locals)
		last = state
		if !ok {
			inARow = 0
			return false
		}
		inARow++
		return inARow >= 5
	}, "every stuck client's session blocked on writing to it")
	if err != nil {
		t.Fatalf("%v\n%s", err, last)
	}
	t.Logf("stuck:\n%s", last)

	start := time.Now()
	if err := proc.Send(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	got, closed := reader.rest(grace + bound)
	werr := proc.Wait(90 * time.Second)
	took := time.Since(start)
	if werr != nil && strings.Contains(werr.Error(), "still running") {
		t.Fatalf("daemon still running %s after SIGTERM", took)
	}
	if took > grace+bound {
		t.Fatalf("daemon exited %s after SIGTERM, want at most %s (grace %s + %s)", took.Round(time.Millisecond), grace+bound, grace, bound)
	}
	if werr != nil {
		t.Fatalf("daemon exit: %v", werr)
	}
	if got != "421 Gateway shutting down, closing control connection.\r\n" || !closed {
		t.Fatalf("reading client got %q (closed %v), want the shutdown 421 then the close", got, closed)
	}
	// Every session was ended, none left running when the rules went.
	logs := proc.Out.String()
	if n := strings.Count(logs, `msg="session ended"`); n != stuck+1 || strings.Count(logs, `reason="gateway shutting down"`) != n || strings.Contains(logs, "still closing") {
		t.Fatalf("want %d sessions ended by the shutdown before the daemon stopped; its log:\n%s", stuck+1, logs)
	}
	if after := snapshot(t, b); after != baseline {
		t.Fatalf("rules left after SIGTERM:\n--- before ftpalg:\n%s\n--- after:\n%s", baseline, after)
	}
	t.Logf("ok: exited %s after SIGTERM (grace %s) with %d clients not reading, every session ended first; reading client got the 421; ruleset as before ftpalg", took.Round(time.Millisecond), grace, stuck)
}

// gatewayStuck reports whether, for every client address in clients, the
// gateway's socket to it has unsent bytes and the session's socket to the
// server has unread ones. state describes what ss showed.
func gatewayStuck(t *testing.T, b *bed.Bed, clients []netip.AddrPort) (bool, string) {
	t.Helper()
	out, err := b.Exec(b.Gateway, 5*time.Second, "ss", "-tnH", "state", "established")
	if err != nil {
		return false, err.Error()
	}
	// Recv-Q Send-Q Local Peer
	type q struct{ recv, send int }
	byPeer := map[string]q{}
	var toServer []q
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 {
			continue
		}
		r, rerr := strconv.Atoi(f[0])
		s, serr := strconv.Atoi(f[1])
		if err := errors.Join(rerr, serr); err != nil {
			t.Fatalf("ss line %q: queue sizes: %v", l, err)
		}
		if strings.HasSuffix(f[3], ":21") {
			toServer = append(toServer, q{r, s})
			continue
		}
		byPeer[f[3]] = q{r, s}
	}
	blockedUp := 0
	for _, s := range toServer {
		if s.recv > 0 {
			blockedUp++
		}
	}
	ok := blockedUp >= len(clients)
	for _, c := range clients {
		if byPeer[c.String()].send == 0 {
			ok = false
		}
	}
	return ok, fmt.Sprintf("sockets to clients (peer: recv/send queue) %v; to the server %v\n%s", byPeer, toServer, out)
}
