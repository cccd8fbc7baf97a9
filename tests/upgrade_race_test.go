package tests

import (
	"bufio"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

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
