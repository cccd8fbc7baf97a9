package tests

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

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
