package tests

// Issue 14, item 9: signals are handled from the start of the process, and
// a death at any point leaves nothing that blocks traffic once systemd's
// ExecStopPost (ftpalg -cleanup) or the next start has run.

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// startWatched starts ftpalg on the gateway without waiting for it, and
// kills it at the end of the test if it still runs.
func startWatched(t *testing.T, b *bed.Bed, env ...string) (*bed.Proc, time.Time) {
	t.Helper()
	p, err := b.StartFtpalgAsync(b.Gateway, env...)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ftpalg output:\n%s", p.Out.String())
		}
		p.Signal(syscall.SIGKILL, 5*time.Second)
	})
	return p, start
}

// waitServing waits until ftpalg answers /readyz, failing if it exits.
func waitServing(t *testing.T, b *bed.Bed, p *bed.Proc) {
	t.Helper()
	if err := b.WaitFor(15*time.Second, func() bool { return !p.Running() || b.Ready() }, "ftpalg ready or gone"); err != nil {
		t.Fatal(err)
	}
	if !p.Running() {
		left := snapshot(t, b)
		t.Fatalf("ftpalg died during start-up: %v; it left %d ftpalg lines, the REDIRECT among them: %q",
			p.Wait(time.Second), strings.Count(left, "ftpalg"), grepLines(left, "REDIRECT"))
	}
}

// stopClean sends SIGTERM, requires exit status 0 and the ruleset back to
// original.
func stopClean(t *testing.T, b *bed.Bed, p *bed.Proc, original string) {
	t.Helper()
	if err := p.Signal(syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	assertClean(t, b, original)
}

func fetch(t *testing.T, b *bed.Bed, hash string) {
	t.Helper()
	out := b.ClientPath("sig.bin")
	if msg, err := b.Curl(b.Client, "-o", out, bed.URL(bed.Server4, "pub/sig.bin")); err != nil {
		t.Fatalf("%v\n%s", err, msg)
	}
	if h, err := bed.HashFile(out); err != nil || h != hash {
		t.Fatalf("content differs (%v)", err)
	}
}

// waitLine waits until the daemon's output contains s.
func waitLine(t *testing.T, b *bed.Bed, p *bed.Proc, s string) {
	t.Helper()
	if err := b.WaitFor(15*time.Second, func() bool { return strings.Contains(p.Out.String(), s) || !p.Running() }, s); err != nil {
		t.Fatal(err)
	}
	if !p.Running() {
		t.Fatalf("ftpalg exited before logging %q: %v", s, p.Wait(time.Second))
	}
}

const startedLine = `msg="ftpalg started"`

func TestSignalsDuringStartup(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	hash, err := b.WriteFile("pub/sig.bin", 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	original := snapshot(t, b)

	t.Run("SIGHUP 300 ms after start", func(t *testing.T) {
		p, start := startWatched(t, b)
		landed := make(chan bool, 1)
		time.AfterFunc(300*time.Millisecond, func() {
			early := !strings.Contains(p.Out.String(), startedLine)
			p.Send(syscall.SIGHUP)
			landed <- early
		})
		early := <-landed
		waitServing(t, b, p)
		t.Logf("SIGHUP sent 300ms after start, before %q: %v; ready %s after start",
			"ftpalg started", early, time.Since(start).Round(time.Millisecond))
		waitLine(t, b, p, `msg="reload: nothing changed"`)
		fetch(t, b, hash)
		stopClean(t, b, p, original)
	})

	t.Run("SIGHUP in the middle of the firewall set-up", func(t *testing.T) {
		p, _ := startWatched(t, b)
		waitLine(t, b, p, `msg="flow log on`) // logged inside the set-up
		if err := p.Send(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitServing(t, b, p)
		// The reload is applied once serving, not before.
		waitLine(t, b, p, `msg="reload: nothing changed"`)
		out := p.Out.String()
		if strings.Index(out, `msg="reload: nothing changed"`) < strings.Index(out, startedLine) {
			t.Fatalf("reload applied before the daemon served:\n%s", out)
		}
		fetch(t, b, hash)
		stopClean(t, b, p, original)
	})

	t.Run("burst of SIGHUPs while it sets up", func(t *testing.T) {
		p, _ := startWatched(t, b)
		// Until its first line the process may still be ip(8) entering
		// the namespace, or the Go runtime before any code of ftpalg
		// runs: no program can catch a signal there. The first line
		// comes before the firewall set-up, which the burst then hits.
		if err := b.WaitFor(10*time.Second, func() bool { return p.Out.String() != "" || !p.Running() }, "ftpalg's first line"); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		type counts struct{ sent, early int }
		res := make(chan counts, 1)
		go func() {
			var c counts
			defer func() { res <- c }()
			tick := time.NewTicker(5 * time.Millisecond) // the stimulus' pace
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				inStartup := !strings.Contains(p.Out.String(), startedLine)
				if p.Send(syscall.SIGHUP) != nil {
					return
				}
				c.sent++
				if inStartup {
					c.early++
				}
			}
		}()
		err := b.WaitFor(15*time.Second, func() bool { return !p.Running() || b.Ready() }, "ftpalg ready or gone")
		close(stop)
		c := <-res
		if err != nil {
			t.Fatal(err)
		}
		if !p.Running() {
			left := snapshot(t, b)
			t.Fatalf("ftpalg died during start-up after %d SIGHUPs: %v; it left %d ftpalg lines", c.sent, p.Wait(time.Second), strings.Count(left, "ftpalg"))
		}
		if c.early == 0 {
			t.Fatalf("no SIGHUP landed in start-up (%d sent)", c.sent)
		}
		t.Logf("ok: %d SIGHUPs sent, %d of them before %q; the daemon lives", c.sent, c.early, "ftpalg started")
		waitLine(t, b, p, `msg="reload: `)
		fetch(t, b, hash)
		stopClean(t, b, p, original)
	})

	// SIGTERM at points of the start-up: as the firewall set-up begins,
	// in the middle of the firewall set-up (the flow log comes up
	// inside it), and just after it. Each is a clean stop.
	for _, at := range []string{`msg="start-up: listening, installing the firewall rules"`, `msg="flow log on`, startedLine} {
		t.Run("SIGTERM at "+at, func(t *testing.T) {
			p, _ := startWatched(t, b)
			waitLine(t, b, p, at)
			if err := p.Send(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := p.Wait(20 * time.Second); err != nil {
				t.Fatalf("exit after SIGTERM during start-up: %v", err)
			}
			assertClean(t, b, original)
			last := strings.TrimSpace(p.Out.String())
			t.Logf("ok: exit 0, ruleset as before; last line: %s", last[strings.LastIndexByte(last, '\n')+1:])
		})
	}
}

// SIGKILL right after readiness leaves the structure, the REDIRECT
// included (LAN FTP is black-holed): `ftpalg -cleanup` removes all of it,
// and so does the next start, whose clean stop leaves the bed's original
// ruleset.
func TestKillLeavesNothingAfterCleanup(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	hash, err := b.WriteFile("pub/sig.bin", 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := bed.Binary()
	if err != nil {
		t.Fatal(err)
	}
	original := snapshot(t, b)
	kill := func(t *testing.T) {
		t.Helper()
		p := startFtpalg(t, b)
		if err := p.Signal(syscall.SIGKILL, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		left := snapshot(t, b)
		if !strings.Contains(left, "-j REDIRECT --to-ports 2121") || !strings.Contains(left, "set FTPALG-FWD4") {
			t.Fatalf("SIGKILL left no structure? (the test needs it)\n%s", left)
		}
		// The REDIRECT now sends LAN FTP to a listener that is gone.
		c, err := b.Dial(b.Client, netip.AddrPortFrom(bed.Server4, 21), 3*time.Second)
		if err == nil {
			c.Close()
			t.Fatal("LAN FTP still reached something after the kill")
		}
		t.Logf("after SIGKILL: LAN FTP fails (%v); %d ftpalg lines left", err, strings.Count(left, "ftpalg"))
	}

	t.Run("ftpalg -cleanup", func(t *testing.T) {
		kill(t)
		cmd := exec.Command("ip", "netns", "exec", b.Gateway, bin, "-cleanup")
		cmd.Env = append(os.Environ(), "FTPALG_MODE=bogus") // it reads no configuration
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ftpalg -cleanup: %v\n%s", err, out)
		}
		if after := snapshot(t, b); after != original {
			t.Fatalf("after ftpalg -cleanup:\n%s\n--- original:\n%s", after, original)
		}
		// Nothing left: a second run has nothing to do and succeeds.
		if out, err := exec.Command("ip", "netns", "exec", b.Gateway, bin, "-cleanup").CombinedOutput(); err != nil {
			t.Fatalf("second ftpalg -cleanup: %v\n%s", err, out)
		}
		t.Logf("ok: ruleset back to the bed's original; output: %q", strings.TrimSpace(string(out)))
	})

	t.Run("next start sweeps, clean stop leaves the original", func(t *testing.T) {
		kill(t)
		p := startFtpalg(t, b)
		fetch(t, b, hash)
		stopClean(t, b, p, original)
	})

	t.Run("-cleanup is documented in ftpalg -h", func(t *testing.T) {
		out, err := exec.Command(bin, "-h").CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "ftpalg -cleanup") {
			t.Fatalf("ftpalg -h does not document -cleanup:\n%s", out)
		}
	})
}
