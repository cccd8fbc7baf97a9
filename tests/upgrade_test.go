package tests

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// upgradeBed runs ftpalg from a copy of the binary in a temporary
// directory, so that a test can replace the binary on disk as an operator
// does before SIGUSR2, and has it write its PID file there.
type upgradeBed struct {
	b       *bed.Bed
	exe     string // the binary ftpalg runs, replaced by install
	good    string // a copy of the binary under test
	pidFile string
	proc    *bed.Proc // the first process (later ones are its descendants)
	// before is the ruleset before ftpalg started.
	before string
}

func newUpgradeBed(t *testing.T, env ...string) *upgradeBed {
	t.Helper()
	requireRoot(t)
	b := newBed(t)
	bin, err := bed.Binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	u := &upgradeBed{b: b, exe: filepath.Join(dir, "ftpalg"), good: filepath.Join(dir, "ftpalg.good"),
		pidFile: filepath.Join(dir, "ftpalg.pid")}
	copyFile(t, bin, u.good, 0o755)
	u.install(t, u.good)
	t.Setenv("FTPALG_BIN", u.exe) // read by StartFtpalg, not passed on
	u.before = snapshot(t, b)
	u.proc = startFtpalg(t, b, append([]string{"FTPALG_PINHOLE_TTL=3s", "FTPALG_SHUTDOWN_GRACE=20s",
		"FTPALG_PID_FILE=" + u.pidFile}, env...)...)
	// Whatever process serves at the end is stopped (it is not the bed's
	// child after an upgrade).
	t.Cleanup(func() {
		if pid, err := u.readPID(); err == nil && alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return u
}

// install replaces the binary on disk with src (a rename, as package
// managers do: the running image is not written to).
func (u *upgradeBed) install(t *testing.T, src string) {
	t.Helper()
	tmp := u.exe + ".new"
	copyFile(t, src, tmp, 0o755)
	if err := os.Rename(tmp, u.exe); err != nil {
		t.Fatal(err)
	}
}

func (u *upgradeBed) installScript(t *testing.T, script string) {
	t.Helper()
	p := filepath.Join(filepath.Dir(u.exe), "script")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	u.install(t, p)
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func (u *upgradeBed) readPID() (int, error) {
	b, err := os.ReadFile(u.pidFile)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// alive says whether pid is a process that has not exited (a zombie has).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] != 'Z'
}

// children lists the processes whose parent is pid, zombies included,
// that are an upgrade's child: the binary on disk (named ftpalg, a script
// too) or what it exec'd (sleep); not the daemon's iptables commands.
func children(t *testing.T, pid int) []string {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:])
		comm := s[strings.IndexByte(s, '(')+1 : i]
		if len(f) > 1 && f[1] == strconv.Itoa(pid) && (comm == "ftpalg" || comm == "sleep") {
			out = append(out, d.Name()+" "+s[:i+1]+" "+f[0])
		}
	}
	return out
}

// upgrade sends SIGUSR2 to the serving process and waits until a new one
// is ready (it wrote its PID) and the old one has exited; it returns the
// new PID.
func (u *upgradeBed) upgrade(t *testing.T) int {
	t.Helper()
	old, err := u.readPID()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	var now int
	if err := u.b.WaitFor(20*time.Second, func() bool {
		now, err = u.readPID()
		return err == nil && now != old && alive(now)
	}, "a new ftpalg process ready"); err != nil {
		t.Fatalf("%v\n%s", err, u.proc.Out.String())
	}
	if err := u.b.WaitFor(30*time.Second, func() bool { return !alive(old) }, "the old process gone"); err != nil {
		t.Fatalf("%v\n%s", err, u.proc.Out.String())
	}
	return now
}

// sessionLoop runs short downloads from the attacker namespace (a second
// LAN client), back to back, checking each one's content, until stop.
type sessionLoop struct {
	mu       sync.Mutex
	ok, fail int
	errs     []string
	stop     chan struct{}
	done     chan struct{}
}

func startSessions(t *testing.T, b *bed.Bed, want string) *sessionLoop {
	t.Helper()
	l := &sessionLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			out := b.ClientPath(fmt.Sprintf("loop-%d.bin", i))
			args := []string{"curl", "-sS", "--fail", "-g", "--connect-timeout", "5", "--max-time", "20", "-o", out}
			if i%2 == 1 {
				args = append(args, "-P", "-") // active: a pool port and a DNAT element
			}
			_, err := b.Exec(b.Attacker, 25*time.Second, append(args, bed.URL(bed.Server4, "pub/small.bin"))...)
			var got string
			if err == nil {
				got, err = bed.HashFile(out)
			}
			os.Remove(out)
			l.mu.Lock()
			if err == nil && got == want {
				l.ok++
			} else {
				l.fail++
				l.errs = append(l.errs, fmt.Sprintf("session %d: %v (hash %s)", i, err, got))
			}
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *sessionLoop) counts() (ok, fail int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, l.fail
}

func (l *sessionLoop) end() (ok, fail int, errs []string) {
	close(l.stop)
	<-l.done
	return l.ok, l.fail, l.errs
}

// missingLines lists the rule lines (iptables-save "-A" and chain lines)
// of want that are not in have.
func missingLines(want, have string) []string {
	in := map[string]bool{}
	for _, l := range strings.Split(have, "\n") {
		in[l] = true
	}
	var out []string
	for _, l := range strings.Split(want, "\n") {
		if (strings.HasPrefix(l, "-A ") || strings.HasPrefix(l, ":")) && !in[l] {
			out = append(out, l)
		}
	}
	return out
}

// slowRetr is a passive RETR read at a fixed rate by the test itself
// (curl --limit-rate sometimes lets a download through at full speed), on
// a control connection from the client.
type slowRetr struct {
	read atomic.Int64
	done chan struct{}
	hash string
	err  error
}

func startSlowRetr(t *testing.T, b *bed.Bed, path string, rate int) *slowRetr {
	t.Helper()
	f := dialFTP(t, b, b.Client, bed.Server4)
	expect(t, f, "TYPE I", 200)
	ep, err := f.pasv()
	if err != nil {
		t.Fatal(err)
	}
	dc, err := b.Dial(b.Client, ep, 5*time.Second)
	if err != nil {
		t.Fatalf("passive data connection: %v", err)
	}
	// A small receive window, so that the server cannot send ahead.
	if err := dc.(*net.TCPConn).SetReadBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	expect(t, f, "RETR "+path, 150)
	r := &slowRetr{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer dc.Close()
		h := sha256.New()
		buf := make([]byte, 16<<10)
		start := time.Now()
		for {
			dc.SetReadDeadline(time.Now().Add(20 * time.Second))
			n, err := dc.Read(buf)
			h.Write(buf[:n])
			total := r.read.Add(int64(n))
			if err == io.EOF {
				break
			}
			if err != nil {
				r.err = fmt.Errorf("read after %d bytes: %w", total, err)
				return
			}
			if ahead := time.Duration(total)*time.Second/time.Duration(rate) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		r.hash = hex.EncodeToString(h.Sum(nil))
		if c, text, err := f.reply(); err != nil || c != 226 {
			r.err = fmt.Errorf("after RETR: %d %q %v", c, text, err)
			return
		}
		if c, text, err := f.cmd("QUIT"); err != nil || c != 221 {
			r.err = fmt.Errorf("QUIT: %d %q %v", c, text, err)
		}
		f.close()
	}()
	return r
}

func (r *slowRetr) wait() (string, error) {
	<-r.done
	return r.hash, r.err
}

// Two SIGUSR2 upgrades in a row: a long, rate-limited transfer spans each
// and completes byte-exact, sessions started during each handover all
// succeed, the PID changes each time, and afterwards the ruleset is the
// static structure again (no hole left, no chain or jump twice). The last
// process, which adopted the rules, removes all of them when stopped.
func TestUpgradeSeamless(t *testing.T) {
	u := newUpgradeBed(t)
	b := u.b
	big := writeFile(t, b, "pub/big.bin", 3<<20)
	small := writeFile(t, b, "pub/small.bin", 4<<10)
	static := snapshot(t, b)
	smallBuffers(t, b) // the server cannot write ahead either
	pid, err := u.readPID()
	if err != nil {
		t.Fatal(err)
	}
	if pid != u.proc.Cmd.Process.Pid {
		t.Fatalf("PID file says %d, the process is %d", pid, u.proc.Cmd.Process.Pid)
	}
	pids := []int{pid}
	for round := 1; round <= 2; round++ {
		long := startSlowRetr(t, b, "pub/big.bin", 512<<10)
		loop := startSessions(t, b, small)
		if err := b.WaitFor(10*time.Second, func() bool { ok, _ := loop.counts(); return ok > 0 }, "a first short session"); err != nil {
			t.Fatal(err)
		}
		before, _ := loop.counts()
		start := time.Now()
		atSignal := long.read.Load()
		pid = u.upgrade(t)
		// The old process left the static structure in place.
		if missing := missingLines(static, snapshot(t, b)); len(missing) > 0 {
			t.Fatalf("round %d: rules missing once the old process exited: %v", round, missing)
		}
		during, _ := loop.counts()
		// Sessions go on after the old process exited.
		if err := b.WaitFor(20*time.Second, func() bool { ok, fail := loop.counts(); return ok+fail >= during+40 }, "40 sessions after the handover"); err != nil {
			t.Fatal(err)
		}
		got, err := long.wait()
		if err != nil {
			t.Fatalf("round %d: the long transfer across the upgrade failed: %v\n%s", round, err, u.proc.Out.String())
		}
		if got != big {
			t.Fatalf("round %d: the long transfer is not byte-exact: %s, want %s", round, got, big)
		}
		// The long transfer spanned the upgrade: it was under way, not
		// over, when SIGUSR2 was sent.
		if atSignal == 0 || atSignal >= 3<<20 {
			t.Fatalf("round %d: %d bytes read at SIGUSR2: the transfer did not span the upgrade", round, atSignal)
		}
		ok, fail, errs := loop.end()
		t.Logf("round %d: pid %d -> %d; long transfer at %d bytes at SIGUSR2, handover (old process gone) after %s; short sessions: %d before SIGUSR2, %d during the handover, %d in all (40 after it), %d failed",
			round, pids[len(pids)-1], pid, atSignal, time.Since(start).Round(time.Millisecond), before, during-before, ok, fail)
		if fail != 0 {
			t.Fatalf("round %d: %d sessions failed during the handover: %v\n%s", round, fail, errs, u.proc.Out.String())
		}
		if during-before == 0 {
			t.Fatalf("round %d: no session ran during the handover: nothing tested", round)
		}
		pids = append(pids, pid)
	}
	if pids[0] == pids[1] || pids[1] == pids[2] || pids[0] == pids[2] {
		t.Fatalf("PIDs %v: want a new process each time", pids)
	}
	// An upgraded gateway still opens holes the usual way.
	if _, err := b.Curl(b.Client, "-o", b.ClientPath("after.bin"), bed.URL(bed.Server4, "pub/small.bin")); err != nil {
		t.Fatal(err)
	}
	if got := hashFile(t, b.ClientPath("after.bin")); got != small {
		t.Fatalf("transfer after the upgrades: %s, want %s", got, small)
	}
	assertClean(t, b, static)
	// Nothing disturbed the rules: no canary of any process saw them drift
	// (in forward mode a connection made while the capture is gone reaches
	// the server directly, so sessions alone cannot tell).
	if out := u.proc.Out.String(); strings.Contains(out, "drift detected") || strings.Contains(out, "not this version's") {
		t.Fatalf("the rules were disturbed during the upgrades:\n%s", out)
	}
	// The adopting process owns the rules: its stop removes them all.
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFor(30*time.Second, func() bool { return !alive(pid) }, "the last process stopped"); err != nil {
		t.Fatal(err)
	}
	if out := u.proc.Out.String(); strings.Count(out, "stopped; all rules removed") != 1 {
		t.Fatalf("want exactly the last process to remove the rules:\n%s", out)
	}
	assertClean(t, b, u.before)
}

// A broken new binary leaves the old process serving: one that exits at
// once, and one that never becomes ready (killed after
// FTPALG_UPGRADE_TIMEOUT). Each failure is counted, the child is gone (no
// zombie, no orphan), a second SIGUSR2 during an upgrade is refused, and
// transfers go on. With the good binary back, the upgrade succeeds.
func TestUpgradeBrokenBinary(t *testing.T) {
	u := newUpgradeBed(t, "FTPALG_UPGRADE_TIMEOUT=2s")
	b := u.b
	small := writeFile(t, b, "pub/small.bin", 4<<10)
	pid := u.proc.Cmd.Process.Pid
	transfer := func(name string) {
		t.Helper()
		out := b.ClientPath(name)
		if _, err := b.Curl(b.Client, "-o", out, bed.URL(bed.Server4, "pub/small.bin")); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := hashFile(t, out); got != small {
			t.Fatalf("%s: %s, want %s", name, got, small)
		}
	}
	noChild := func(why string) {
		t.Helper()
		if err := b.WaitFor(5*time.Second, func() bool { return len(children(t, pid)) == 0 }, "no child of "+strconv.Itoa(pid)); err != nil {
			t.Fatalf("%s: children left %v: %v", why, children(t, pid), err)
		}
	}
	failed := `ftpalg_upgrades_total{result="failed"}`

	u.installScript(t, "echo broken binary >&2; exit 1")
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, b, failed, 1, 10*time.Second)
	noChild("after a binary that exits 1")
	transfer("after-exit.bin")

	u.installScript(t, "exec sleep 600")
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFor(5*time.Second, func() bool { return len(children(t, pid)) == 1 }, "the hanging child started"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, b, `ftpalg_upgrades_total{result="refused"}`, 1, 5*time.Second)
	transfer("during-hang.bin")
	waitMetric(t, b, failed, 2, 10*time.Second)
	noChild("after a binary that never becomes ready")
	transfer("after-hang.bin")
	if !alive(pid) {
		t.Fatal("the old process is gone")
	}
	if now, err := u.readPID(); err != nil || now != pid {
		t.Fatalf("PID file %d (%v), want %d: no other process took over", now, err, pid)
	}
	out := u.proc.Out.String()
	for _, want := range []string{"upgrade failed: the new process was stopped, this one keeps serving", "SIGUSR2 refused: an upgrade is already running", "timed out"} {
		if !strings.Contains(out, want) {
			t.Fatalf("log lacks %q:\n%s", want, out)
		}
	}

	u.install(t, u.good)
	if now := u.upgrade(t); now == pid {
		t.Fatal("same PID after the upgrade")
	}
	transfer("after-upgrade.bin")
	waitMetric(t, b, `ftpalg_upgrades_total{result="ok"}`, 0, 5*time.Second) // a new process: its own counters
}

// waitTakenOver sends SIGUSR2 and waits until the new process is ready,
// with the old one still draining; it returns both PIDs.
func (u *upgradeBed) waitTakenOver(t *testing.T) (old, now int) {
	t.Helper()
	old, err := u.readPID()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if err := u.b.WaitFor(20*time.Second, func() bool {
		now, err = u.readPID()
		return err == nil && now != old && alive(now)
	}, "a new ftpalg process ready"); err != nil {
		t.Fatalf("%v\n%s", err, u.proc.Out.String())
	}
	return old, now
}

// The new process adopts the holes the old one opened and left unused: a
// passive and an active hole opened before SIGUSR2 serve their sessions
// (still on the old process) after the new one took over, and the new
// process lends no port an adopted hole holds to that hole's peer (the
// server, for an active hole): its own active hole for the same client
// and server works too, and on another port.
func TestUpgradeAdoptsHoles(t *testing.T) {
	// A pool of two: the new process, starting half the pool ahead of the
	// old one's cursor, comes to the adopted hole's port at once.
	u := newUpgradeBed(t, "FTPALG_DATA_PORTS=50000-50001")
	b := u.b
	static := snapshot(t, b)
	wantList := func(f *ftpConn, ln net.Listener, why string) {
		t.Helper()
		expect(t, f, "LIST pub", 150)
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		dc, err := ln.Accept()
		if err != nil {
			t.Fatalf("%s: the active data connection never arrived: %v", why, err)
		}
		defer dc.Close()
		readTransfer(t, f, dc, "pub")
	}
	// On the old process: an active hole (the server to a pool port, DNAT
	// to the client) and a passive one, both unused.
	fa := dialFTP(t, b, b.Client, bed.Server4)
	lnA, _, portA := clientListener(t, b)
	defer lnA.Close()
	expect(t, fa, portA, 200)
	fp := dialFTP(t, b, b.Client, bed.Server4)
	ep, err := fp.pasv()
	if err != nil {
		t.Fatal(err)
	}
	if holdsA := activeHoles(t, b); len(holdsA) != 1 || !strings.HasSuffix(holdsA[0], " . 50000") {
		t.Fatalf("want one active hole, on 50000, have %v", holdsA)
	}

	old, now := u.waitTakenOver(t)
	if !alive(old) {
		t.Fatal("the old process left without draining its sessions")
	}
	// On the new process: an active hole for the same client and server.
	fb := dialFTP(t, b, b.Client, bed.Server4)
	lnB, _, portB := clientListener(t, b)
	defer lnB.Close()
	expect(t, fb, portB, 200)
	both := activeHoles(t, b)
	slices.Sort(both)
	if want := []string{"198.51.100.20 . 198.51.100.1 . 50000", "198.51.100.20 . 198.51.100.1 . 50001"}; !slices.Equal(both, want) {
		t.Fatalf("want the adopted active hole on 50000 and the new one on 50001, have %v", both)
	}
	if out := u.proc.Out.String(); !strings.Contains(out, "previous_cursor=50001 cursor=50000") {
		t.Fatalf("the new process did not continue the old one's pool:\n%s", out)
	}
	wantList(fa, lnA, "adopted active hole")
	usePassive(t, b, fp, b.Client, ep, "pub")
	wantList(fb, lnB, "the new process's active hole")
	for _, f := range []*ftpConn{fa, fp, fb} {
		expect(t, f, "QUIT", 221)
		f.close()
	}
	if err := b.WaitFor(30*time.Second, func() bool { return !alive(old) }, "the old process gone"); err != nil {
		t.Fatal(err)
	}
	if out := u.proc.Out.String(); strings.Count(out, "flow log on") != 2 || strings.Contains(out, "not this version's") {
		t.Fatalf("want each process to run the flow log and the new one to keep the structure as it is:\n%s", out)
	}
	assertClean(t, b, static)
	if !alive(now) {
		t.Fatal("the new process is gone")
	}
}

// activeHoles lists the DNAT elements from the server to the gateway's
// pool: the NAT halves of the active holes.
func activeHoles(t *testing.T, b *bed.Bed) []string {
	t.Helper()
	out, err := b.Exec(b.Gateway, 5*time.Second, "nft", "list", "map", "ip", "ftpalg", "dnat4")
	if err != nil {
		t.Fatalf("nft list map dnat4: %v %s", err, out)
	}
	return regexp.MustCompile(`198\.51\.100\.20 \. 198\.51\.100\.1 \. \d+`).FindAllString(out, -1)
}

// The race of an upgrade: the old process revokes its own hole while the
// new one holds a hole on the same kernel key. A fake server announces the
// same passive port to a session on the old process and then to one on the
// new process, so both holes are the filter entry client -> server:port.
// The old session ends (its hole revoked) and the old process exits; the
// new session's hole must still admit its data connection.
func TestUpgradeOldRevokeSparesNewHole(t *testing.T) {
	u := newUpgradeBed(t)
	b := u.b
	data := netip.AddrPortFrom(bed.Outsider4, 40000)
	fake := startFake(t, b, netip.AddrPortFrom(bed.Outsider4, 21))
	fake.set(func(c net.Conn, r *bufio.Reader) {
		for {
			l, err := fakeLine(c, r)
			if err != nil {
				return
			}
			switch l {
			case "PASV":
				c.Write([]byte("227 Entering Passive Mode (" + tuple(data) + ").\r\n"))
			case "QUIT":
				c.Write([]byte("221 Bye.\r\n"))
				return
			default:
				c.Write([]byte("200 ok\r\n"))
			}
		}
	})
	ln, err := b.Listen(b.Outsider, data)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	static := snapshot(t, b)

	fo := dialFTP(t, b, b.Client, bed.Outsider4)
	if ep, err := fo.pasv(); err != nil || ep != data {
		t.Fatalf("PASV on the old process: %s, %v; want %s", ep, err, data)
	}
	old, now := u.waitTakenOver(t)
	if err := b.WaitFor(10*time.Second, func() bool {
		return strings.Contains(u.proc.Out.String(), "upgraded=true")
	}, "the old process no longer accepting"); err != nil {
		t.Fatal(err)
	}
	fn := dialFTP(t, b, b.Client, bed.Outsider4)
	if ep, err := fn.pasv(); err != nil || ep != data {
		t.Fatalf("PASV on the new process: %s, %v; want %s", ep, err, data)
	}
	if m := fwdMembers(t, b); len(m) != 1 {
		t.Fatalf("want the one shared filter entry, have %v", m)
	}
	expect(t, fo, "QUIT", 221)
	fo.close()
	if err := b.WaitFor(30*time.Second, func() bool { return !alive(old) }, "the old process gone"); err != nil {
		t.Fatal(err)
	}
	c, err := b.Dial(b.Client, data, 3*time.Second)
	if err != nil {
		t.Fatalf("the new process's hole was taken by the old process's revoke: %v\nsets: %v", err, fwdMembers(t, b))
	}
	c.Close()
	expect(t, fn, "QUIT", 221)
	fn.close()
	assertClean(t, b, static)
	if !alive(now) {
		t.Fatal("the new process is gone")
	}
}

// As PID 1 (a container's entry point) SIGUSR2 is refused: the new process
// would die when this one exits. The process serves on.
func TestUpgradeRefusedAsPID1(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	bin, err := bed.Binary()
	if err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(t.TempDir(), "pid1")
	script := "#!/bin/sh\nexec unshare --pid --fork --kill-child " + bin + "\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FTPALG_BIN", wrapper)
	p := startFtpalg(t, b, "FTPALG_PINHOLE_TTL=3s")
	static := snapshot(t, b)
	var kids []string
	if err := b.WaitFor(5*time.Second, func() bool {
		kids = children(t, p.Cmd.Process.Pid)
		return len(kids) == 1
	}, "ftpalg under unshare"); err != nil {
		t.Fatalf("%v: %v", err, kids)
	}
	pid, err := strconv.Atoi(strings.Fields(kids[0])[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, b, `ftpalg_upgrades_total{result="refused"}`, 1, 5*time.Second)
	if !strings.Contains(p.Out.String(), "SIGUSR2 refused: this process is PID 1") {
		t.Fatalf("no refusal logged:\n%s", p.Out.String())
	}
	if len(children(t, pid)) != 0 || !alive(pid) {
		t.Fatal("a new process was started, or the old one is gone")
	}
	small := writeFile(t, b, "pub/small.bin", 1<<10)
	if _, err := b.Curl(b.Client, "-o", b.ClientPath("small.bin"), bed.URL(bed.Server4, "pub/small.bin")); err != nil {
		t.Fatal(err)
	}
	if got := hashFile(t, b.ClientPath("small.bin")); got != small {
		t.Fatalf("transfer after the refusal: %s, want %s", got, small)
	}
	assertClean(t, b, static)
}
